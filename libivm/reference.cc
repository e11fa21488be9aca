// reference.cc — ivm_reference_t: a handle to a value that stays in its isolate.
//
// Operations through a reference (get, set, delete, apply) are calls into the
// reference's isolate, in the context where the reference was made, with the
// same timeout, termination and result forms as an evaluation.
#include "remote.h"
#include "reference.h"

#include "copy.h"

namespace ivm {

ivm_error_t* RunRefOp(const ReferenceData& ref, const RefOp& op, const CallOptions& o,
                      ivm_value_t** out) {
  IsolateHolder& holder = *ref.holder;
  return RunInContext(holder, o.timeout_ns, *ref.record, kReferenceReleased,
                      [&](v8::Isolate* isolate, v8::Local<v8::Context> context,
                          v8::TryCatch& try_catch, CallState& call) -> ivm_error_t* {
    v8::Local<v8::Value> self = ref.record->value.Get(isolate);
    auto complete = [&](v8::MaybeLocal<v8::Value> result) {
      return CompleteCall(holder, isolate, context, try_catch, call, result, o.flags, out);
    };
    // A host value in this isolate; false: `*err` set or an exception pending.
    ivm_error_t* err = nullptr;
    auto convert = [&](const ivm_value_t* v, v8::Local<v8::Value>* dst) -> bool {
      if (v == nullptr) {
        *dst = v8::Undefined(isolate);
        return true;
      }
      err = ValueToV8(holder, isolate, context, call, v, dst);
      return err == nullptr && !dst->IsEmpty();
    };
    auto throw_type_error = [&](const char* message) {
      isolate->ThrowException(v8::Exception::TypeError(
          v8::String::NewFromUtf8(isolate, message).ToLocalChecked()));
      return complete({});
    };
    switch (op.kind) {
      case RefOp::kGet:
      case RefOp::kSet:
      case RefOp::kDelete: {
        if (op.kind == RefOp::kGet && op.key == nullptr) return complete(self);
        if (!self->IsObject()) return throw_type_error("Reference is not an object");
        v8::Local<v8::Object> object = self.As<v8::Object>();
        v8::Local<v8::Value> key;
        if (!convert(op.key, &key)) return err ? err : complete({});
        if (op.kind == RefOp::kGet) {
          if (!(op.get_flags & IVM_GET_UNSAFE_INHERIT)) {
            // Own properties only (isolated-vm's default): nothing planted
            // on a prototype is read through a reference.
            v8::Local<v8::Name> name;
            bool own = false;
            if (key->IsName()) {
              name = key.As<v8::Name>();
            } else {
              v8::Local<v8::String> str;
              if (!key->ToString(context).ToLocal(&str)) return complete({});
              name = str;
            }
            if (!object->HasOwnProperty(context, name).To(&own)) return complete({});
            if (!own) return complete(v8::Undefined(isolate));
          }
          return complete(object->Get(context, key));
        }
        if (op.kind == RefOp::kDelete) {
          v8::Maybe<bool> done = object->Delete(context, key);
          if (done.IsNothing()) return complete({});
          return complete(v8::Boolean::New(isolate, done.FromJust()));
        }
        v8::Local<v8::Value> value;
        if (!convert(op.value, &value)) return err ? err : complete({});
        v8::Maybe<bool> done = object->Set(context, key, value);
        if (done.IsNothing()) return complete({});
        return complete(v8::Boolean::New(isolate, done.FromJust()));
      }
      case RefOp::kApply: {
        if (!self->IsFunction()) return throw_type_error("Reference is not a function");
        v8::Local<v8::Value> receiver;
        if (!convert(op.receiver, &receiver)) return err ? err : complete({});
        // A few arguments (the common case) need no allocation. (In a union,
        // left unset: each is set before the call reads it. Eight zeroed
        // Locals were a `rep stos` per call.)
        constexpr size_t kFew = 8;
        union Few {
          Few() {}   // NOLINT(modernize-use-equals-default)
          v8::Local<v8::Value> v[kFew];
        } few_args;
        v8::Local<v8::Value>* const few = few_args.v;
        std::vector<v8::Local<v8::Value>> many;
        v8::Local<v8::Value>* argv = few;
        if (op.nargs > kFew) {
          many.resize(op.nargs);
          argv = many.data();
        }
        for (size_t i = 0; i < op.nargs; ++i) {
          if (op.args[i] == nullptr) {
            if (op.inline_args == nullptr) {
              return InvalidArgument("argument " + std::to_string(i) + " is NULL");
            }
            argv[i] = PrimitiveToV8(isolate, op.inline_args[i]);
            continue;
          }
          if (!convert(op.args[i], &argv[i])) return err ? err : complete({});
        }
        return complete(self.As<v8::Function>()->Call(context, receiver,
                                                      static_cast<int>(op.nargs), argv));
      }
    }
    return InvalidArgument("unknown operation");
  });
}

namespace {

// Owns the values of an asynchronous operation until its job ends.
struct OwnedValues {
  std::vector<std::unique_ptr<ivm_value_t>> values;
  ivm_value_t* Take(ivm_value_t* v) {
    if (v) values.emplace_back(v);
    return v;
  }
};

// The operations, as both the synchronous and the queued calls make them.
RefOp GetOp(const ivm_value_t* key, uint32_t flags) {
  RefOp op;
  op.kind = RefOp::kGet;
  op.key = key;
  op.get_flags = flags;
  return op;
}

RefOp SetOp(const ivm_value_t* key, const ivm_value_t* value) {
  RefOp op;
  op.kind = RefOp::kSet;
  op.key = key;
  op.value = value;
  return op;
}

RefOp DeleteOp(const ivm_value_t* key) {
  RefOp op;
  op.kind = RefOp::kDelete;
  op.key = key;
  return op;
}

RefOp ApplyOp(const ivm_value_t* receiver, ivm_value_t* const* args, size_t nargs) {
  RefOp op;
  op.kind = RefOp::kApply;
  op.receiver = receiver;
  op.args = args;
  op.nargs = nargs;
  return op;
}

// Runs `op` now (`result` NULL for set and delete, whose result is a boolean).
ivm_error_t* SyncRefOp(ivm_reference_t* ref, const RefOp& op, const ivm_run_options_t* run,
                       const ivm_result_options_t* result, ivm_value_t** out,
                       ivm_primitive_t* primitive_out) {
  CallOptions o;
  if (ivm_error_t* err = ReadCallOptions(run, result, &o)) return err;
  ivm_error_t* err = nullptr;
  if (ref->data.remote) {
    err = remote::RefCall(ref->data.remote, op, o, out);
  } else {
    PrimitiveOutScope direct(primitive_out);
    err = RunRefOp(ref->data, op, o, out);
  }
  if (err == nullptr) DeliverPrimitive(primitive_out, out);
  return err;
}

ivm_error_t* QueueRefOp(ivm_reference_t* ref, RefOp op, std::shared_ptr<OwnedValues> owned,
                        const ivm_run_options_t* run, const ivm_result_options_t* result,
                        ivm_done_fn done, void* user_data, uint64_t* job_out) {
  if (ref == nullptr || done == nullptr) return InvalidArgument("reference or done is NULL");
  CallOptions o;
  if (ivm_error_t* err = ReadCallOptions(run, result, &o)) return err;
  if (ref->data.remote) {
    return remote::RefCallAsync(ref->data.remote, op, o, owned, done, user_data, job_out);
  }
  ReferenceData data = ref->data;
  std::vector<const ivm_value_t*> args;
  if (op.kind == RefOp::kApply) args.assign(op.args, op.args + op.nargs);
  return Enqueue(
      data.holder, IVM_COMPLETION_VALUE, done, user_data,
      [data, op, owned, o, args = std::move(args)](ivm_completion_t* c) mutable -> ivm_error_t* {
        op.args = args.data();
        return RunRefOp(data, op, o, &c->result.value);
      },
      job_out);
}

}  // namespace

std::shared_ptr<ReferenceData> MakeReference(IsolateHolder& holder, v8::Isolate* isolate,
                                             v8::Local<v8::Context> context,
                                             v8::Local<v8::Value> value) {
  auto record = std::make_shared<ReferenceRecord>();
  record->value.Reset(isolate, value);
  record->context.Reset(isolate, context);
  compat::AppendWtf8(isolate, value->TypeOf(isolate), record->type_of);
  std::shared_ptr<IsolateHolder> shared = holder.shared_from_this();
  shared->Register(record);
  auto data = std::make_shared<ReferenceData>();
  Share(*data, shared, std::move(record));
  return data;
}

}  // namespace ivm

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API ivm_error_t* ivm_context_global(ivm_context_t* ctx, ivm_reference_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (ctx == nullptr || out == nullptr) return InvalidArgument("context or out is NULL");
    if (ctx->remote) return ivm::remote::Global(ctx, out);
    std::shared_ptr<ivm::ReferenceData> data;
    ivm::IsolateHolder& holder = *ctx->holder;
    ivm_error_t* err = holder.Locked([&](v8::Isolate* isolate) -> ivm_error_t* {
      if (ctx->record->released()) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kContextReleased);
      v8::Local<v8::Context> context = ctx->record->context.Get(isolate);
      v8::Context::Scope scope(context);
      data = ivm::MakeReference(holder, isolate, context, context->Global());
      return nullptr;
    });
    if (err) return err;
    auto handle = std::make_unique<ivm_reference>();
    handle->data = *data;
    *out = handle.release();
    return nullptr;
  });
}

IVM_API void ivm_reference_typeof(const ivm_reference_t* ref, const char** out, size_t* out_len) {
  static const char empty[] = "";
  const std::string* type_of = nullptr;
  if (ref != nullptr && ref->data.record) type_of = &ref->data.record->type_of;
  if (ref != nullptr && ref->data.remote) type_of = &ref->data.remote->type_of;
  if (out) *out = type_of ? type_of->data() : empty;
  if (out_len) *out_len = type_of ? type_of->size() : 0;
}

IVM_API ivm_error_t* ivm_reference_get(ivm_reference_t* ref, const ivm_value_t* key,
                                       uint32_t flags, const ivm_run_options_t* run,
                                       const ivm_result_options_t* result, ivm_value_t** out,
                                       ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ref == nullptr || out == nullptr) return InvalidArgument("reference or out is NULL");
    return ivm::SyncRefOp(ref, ivm::GetOp(key, flags), run, result, out, primitive_out);
  });
}

IVM_API ivm_error_t* ivm_reference_set(ivm_reference_t* ref, const ivm_value_t* key,
                                       const ivm_value_t* value, const ivm_run_options_t* run,
                                       ivm_value_t** out, ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ref == nullptr || out == nullptr || key == nullptr || value == nullptr) {
      return InvalidArgument("reference, key, value or out is NULL");
    }
    return ivm::SyncRefOp(ref, ivm::SetOp(key, value), run, nullptr, out, primitive_out);
  });
}

IVM_API ivm_error_t* ivm_reference_delete(ivm_reference_t* ref, const ivm_value_t* key,
                                          const ivm_run_options_t* run, ivm_value_t** out,
                                          ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ref == nullptr || out == nullptr || key == nullptr) {
      return InvalidArgument("reference, key or out is NULL");
    }
    return ivm::SyncRefOp(ref, ivm::DeleteOp(key), run, nullptr, out, primitive_out);
  });
}

IVM_API ivm_error_t* ivm_reference_apply(ivm_reference_t* ref, const ivm_value_t* receiver,
                                         ivm_value_t* const* args, size_t nargs,
                                         const ivm_run_options_t* run,
                                         const ivm_result_options_t* result, ivm_value_t** out,
                                         ivm_primitive_t* primitive_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ref == nullptr || out == nullptr) return InvalidArgument("reference or out is NULL");
    if (ivm_error_t* err = ivm::CheckArgs(args, nargs)) return err;
    return ivm::SyncRefOp(ref, ivm::ApplyOp(receiver, args, nargs), run, result, out,
                          primitive_out);
  });
}

IVM_API ivm_error_t* ivm_reference_get_async(ivm_reference_t* ref, ivm_value_t* key,
                                             uint32_t flags, const ivm_run_options_t* run,
                                             const ivm_result_options_t* result,
                                             ivm_done_fn done, void* user_data,
                                             uint64_t* job_out) {
  auto owned = std::make_shared<ivm::OwnedValues>();
  owned->Take(key);
  return Guard([&]() -> ivm_error_t* {
    return ivm::QueueRefOp(ref, ivm::GetOp(key, flags), owned, run, result, done, user_data,
                           job_out);
  });
}

IVM_API ivm_error_t* ivm_reference_set_async(ivm_reference_t* ref, ivm_value_t* key,
                                             ivm_value_t* value, const ivm_run_options_t* run,
                                             ivm_done_fn done, void* user_data,
                                             uint64_t* job_out) {
  auto owned = std::make_shared<ivm::OwnedValues>();
  owned->Take(key);
  owned->Take(value);
  return Guard([&]() -> ivm_error_t* {
    if (key == nullptr || value == nullptr) return InvalidArgument("key or value is NULL");
    return ivm::QueueRefOp(ref, ivm::SetOp(key, value), owned, run, nullptr, done, user_data,
                           job_out);
  });
}

IVM_API ivm_error_t* ivm_reference_delete_async(ivm_reference_t* ref, ivm_value_t* key,
                                                const ivm_run_options_t* run, ivm_done_fn done,
                                                void* user_data, uint64_t* job_out) {
  auto owned = std::make_shared<ivm::OwnedValues>();
  owned->Take(key);
  return Guard([&]() -> ivm_error_t* {
    if (key == nullptr) return InvalidArgument("key is NULL");
    return ivm::QueueRefOp(ref, ivm::DeleteOp(key), owned, run, nullptr, done, user_data,
                           job_out);
  });
}

IVM_API ivm_error_t* ivm_reference_apply_async(ivm_reference_t* ref, ivm_value_t* receiver,
                                               ivm_value_t** args, size_t nargs,
                                               const ivm_run_options_t* run,
                                               const ivm_result_options_t* result,
                                               ivm_done_fn done, void* user_data,
                                               uint64_t* job_out) {
  auto owned = std::make_shared<ivm::OwnedValues>();
  try {
    owned->Take(receiver);
    for (size_t i = 0; args && i < nargs; ++i) owned->Take(args[i]);
  } catch (...) {
    return ivm::MakeError(IVM_ERROR_INTERNAL, "out of memory");
  }
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = ivm::CheckArgs(args, nargs)) return err;
    return ivm::QueueRefOp(ref, ivm::ApplyOp(receiver, args, nargs), owned, run, result, done,
                           user_data, job_out);
  });
}

IVM_API void ivm_reference_cancel_job(ivm_reference_t* ref, uint64_t job) {
  if (ref == nullptr) return;
  try {
    if (ref->data.remote) return ivm::remote::CancelJob(*ref->data.remote->iso, job);
    ref->data.holder->jobs().Cancel(job);
  } catch (...) {
  }
}

IVM_API ivm_error_t* ivm_reference_release(ivm_reference_t* ref) {
  return Guard([&]() -> ivm_error_t* {
    if (ref == nullptr) return InvalidArgument("reference is NULL");
    if (ref->data.remote) {
      ivm::remote::ReleaseReference(*ref->data.remote);
      return nullptr;
    }
    ref->data.holder->Release(ref->data.record);
    return nullptr;
  });
}

IVM_API void ivm_reference_free(ivm_reference_t* ref) { ivm::FreeHandle(ref); }

IVM_API ivm_error_t* ivm_value_reference(const ivm_value_t* value, ivm_reference_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (value == nullptr || out == nullptr) return InvalidArgument("value or out is NULL");
    if (value->kind != IVM_VALUE_REFERENCE || !value->reference) {
      return InvalidArgument("not a reference value");
    }
    auto handle = std::make_unique<ivm_reference>();
    handle->data = *value->reference;
    *out = handle.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_value_attachment_reference(const ivm_value_t* value, size_t index,
                                                    ivm_reference_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (out == nullptr || ivm_value_attachment_kind(value, index) != IVM_ATTACHMENT_REFERENCE) {
      return InvalidArgument("no Reference attachment " + std::to_string(index));
    }
    auto handle = std::make_unique<ivm_reference>();
    handle->data = *value->serialized->attachments[index].reference;
    *out = handle.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_value_attach_reference(ivm_value_t* value, ivm_reference_t* ref,
                                                uint32_t flags, size_t* index_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = ivm::CheckSerialized(value)) return err;
    if (ref == nullptr) return InvalidArgument("reference is NULL");
    bool released = ref->data.remote ? ref->data.remote->released.load()
                                     : ref->data.record->released();
    if (released) return ivm::MakeError(IVM_ERROR_DISPOSED, ivm::kReferenceReleased);
    if ((flags & IVM_ATTACH_RELEASE) && !(flags & IVM_ATTACH_DEREF)) {
      return InvalidArgument("IVM_ATTACH_RELEASE needs IVM_ATTACH_DEREF");
    }
    ivm::Attachment a;
    a.kind = ivm::Attachment::kReference;
    a.reference = std::make_shared<ivm::ReferenceData>(ref->data);
    a.flags = flags;
    ivm::AppendAttachment(value, std::move(a), index_out);
    return nullptr;
  });
}

}  // extern "C"
