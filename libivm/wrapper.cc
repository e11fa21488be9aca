// wrapper.cc — Reference and ExternalCopy objects inside isolates.
//
// A Reference (to a value of any isolate, or to a host value) or an
// ExternalCopy passed into an isolate becomes an object with isolated-vm's
// JavaScript API (getSync, applySync, copyInto...). Its methods are made with
// a v8::Signature, so V8 itself refuses any `this` that is not such an
// object ("Illegal invocation"): they cannot be called on forged or
// look-alike objects. The objects cannot be constructed from JavaScript.
#include "wrapper.h"

#include "callback.h"
#include "copy.h"
#include "reference.h"

#include <cmath>
#include <new>
#include <optional>

namespace ivm {

namespace {

alignas(8) const char kWrapTag = 0;   // its address marks our objects' second internal field
                                    // (V8 requires an even address there)
// What a Reference object to another isolate's value is reported to cost
// (IsolateHolder::ReportPinned): about an idle isolate with a context.
constexpr int64_t kPinnedIsolateBytes = 1 << 20;

}  // namespace

struct WrapBox {
  enum Kind { kReference, kHost, kDeref, kCopy } kind = kReference;
  // kReference, kDeref. For a value of the box's own isolate (`self`), no
  // strong reference to that isolate is kept (it would keep the isolate
  // alive through its own heap): `ref.holder` and `ref.lease` are empty and
  // `ref.record` is the box's own, released with the box.
  ReferenceData ref;
  bool self = false;
  std::shared_ptr<CallbackData> host;  // kHost
  std::string host_type;               // kHost: typeof
  std::shared_ptr<CopyData> copy;      // kCopy
  bool released = false;
  // Synchronous calls through `ref` on the stack of the isolate's thread
  // (SyncOp's RunningCall): release() leaves `ref` to the last of them.
  int running = 0;
};

class WrapRecord final : public Resource {
 public:
  void ResetLocked() override {
    object.Reset();
    holder->ReportPinned(-pinned);
    pinned = 0;
    if (box && box->self && box->ref.record) {
      box->ref.record->ResetLocked();
      holder->ReleaseLater(box->ref.record.get());
    }
    box.reset();
  }
  v8::Global<v8::Object> object;
  std::unique_ptr<WrapBox> box;
  IsolateHolder* holder = nullptr;
  int64_t pinned = 0;   // reported to V8 for the isolate the box keeps alive
};

namespace {

void OnWrapperCollected(const v8::WeakCallbackInfo<WrapRecord>& info) {
  WrapRecord* record = info.GetParameter();
  record->object.Reset();
  record->holder->ReleaseLater(record);
}

v8::Local<v8::String> Str(v8::Isolate* isolate, const std::string& s) {
  return NewString(isolate, s.data(), s.size(), nullptr).FromMaybe(v8::String::Empty(isolate));
}

void Throw(v8::Isolate* isolate, const std::string& message, bool type_error = false) {
  v8::Local<v8::String> m = Str(isolate, message);
  isolate->ThrowException(type_error ? v8::Exception::TypeError(m) : v8::Exception::Error(m));
}

// An error of another isolate (or of the host), thrown here. JavaScript
// errors keep their stack, with a marker line where they crossed.
void ThrowError(v8::Isolate* isolate, ivm_error_t* err) {
  // A value that cannot be passed or inserted is a TypeError, like a
  // TransferError in Python.
  if (err->name.empty() && err->kind == IVM_ERROR_TRANSFER) err->name = "TypeError";
  std::string stack = err->stack;
  if (stack.empty()) stack = (err->name.empty() ? "Error" : err->name) + ": " + err->message;
  stack += "\n    at (<ivm boundary>)";
  AppendCurrentFrames(isolate, stack);   // this isolate's frames follow the boundary
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  v8::Local<v8::Object> obj = NewError(isolate, context, err->name, Str(isolate, err->message));
  obj->DefineOwnProperty(context, v8::String::NewFromUtf8Literal(isolate, "stack"),
                         Str(isolate, stack), v8::DontEnum)
      .FromMaybe(false);
  // The whole stack, for when this error leaves this isolate in turn.
  MarkCrossedStack(isolate, context, obj, Str(isolate, stack));
  ivm_error_free(err);
  isolate->ThrowException(obj);
}

// Reads `options[name]` (undefined when absent).
v8::Local<v8::Value> Member(v8::Local<v8::Context> context, v8::Local<v8::Value> options,
                            const char* name, bool* ok) {
  v8::Isolate* isolate = context->GetIsolate();
  // After a throw, read nothing more.
  if (!*ok || !options->IsObject()) return v8::Undefined(isolate);
  v8::Local<v8::Value> v;
  if (!options.As<v8::Object>()
           ->Get(context, v8::String::NewFromUtf8(isolate, name).ToLocalChecked())
           .ToLocal(&v)) {
    *ok = false;
    return v8::Undefined(isolate);
  }
  return v;
}

// Reads `options[name]` as a boolean (false when absent).
bool Flag(v8::Local<v8::Context> context, v8::Local<v8::Value> options, const char* name,
          bool* ok) {
  if (!*ok || !options->IsObject()) return false;   // (what Member would give)
  return Member(context, options, name, ok)->BooleanValue(context->GetIsolate());
}

// Result options ({copy, externalCopy, reference, promise}), unsafeInherit
// (IVM_GET_* flags for gets) and timeout (ms).
bool ReadResultOptions(v8::Local<v8::Context> context, v8::Local<v8::Value> options,
                       v8::Local<v8::Value> result_options, CallOptions* o,
                       uint32_t* get_flags) {
  if (!options->IsObject() && !result_options->IsObject()) {   // nothing to read
    *get_flags = 0;
    o->flags = 0;
    return true;
  }
  bool ok = true;
  uint32_t flags = 0;
  if (Flag(context, result_options, "copy", &ok)) flags |= IVM_RESULT_COPY;
  if (Flag(context, result_options, "externalCopy", &ok)) flags |= IVM_RESULT_EXTERNAL_COPY;
  if (Flag(context, result_options, "reference", &ok)) flags |= IVM_RESULT_REFERENCE;
  if (Flag(context, result_options, "promise", &ok)) flags |= IVM_RESULT_PROMISE;
  *get_flags = Flag(context, options, "unsafeInherit", &ok) ? IVM_GET_UNSAFE_INHERIT : 0;
  v8::Local<v8::Value> timeout = Member(context, options, "timeout", &ok);
  if (!ok) return false;
  if (timeout->IsNumber()) {
    double ms = timeout.As<v8::Number>()->Value();
    if (std::isfinite(ms) && ms > 0) o->timeout_ns = static_cast<uint64_t>(std::min(ms, 9e12) * 1e6);
  }
  o->flags = flags;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// Templates (one set per isolate)

// The set lives in the isolate's data slot kTemplatesSlot, made on first use;
// registered with the holder, which keeps it alive and resets it at disposal.
constexpr uint32_t kTemplatesSlot = 1;

class WrapperTemplates final : public Resource {
 public:
  void ResetLocked() override {
    reference.Reset();
    deref.Reset();
    copy.Reset();
  }
  v8::Global<v8::FunctionTemplate> reference, deref, copy;
};

namespace {

WrapBox* BoxOf(v8::Local<v8::Object> obj) {
  if (obj->InternalFieldCount() != 2) return nullptr;
  if (obj->GetAlignedPointerFromInternalField(1) != &kWrapTag) return nullptr;
  auto* record = static_cast<WrapRecord*>(obj->GetAlignedPointerFromInternalField(0));
  return record ? record->box.get() : nullptr;
}

// The box of a method's receiver. Every method is made with a v8::Signature of
// its class (Method, Templates), so V8 calls it only with an object of that
// class's instance template, which has our two internal fields: unlike BoxOf,
// which takes any object, no InternalFieldCount check (about 75 instructions
// per call: V8 computes the header size from the instance type).
WrapBox* BoxOfReceiver(const v8::FunctionCallbackInfo<v8::Value>& info) {
  v8::Local<v8::Object> obj = info.This();
  if (obj->GetAlignedPointerFromInternalField(1) != &kWrapTag) return nullptr;
  auto* record = static_cast<WrapRecord*>(obj->GetAlignedPointerFromInternalField(0));
  return record ? record->box.get() : nullptr;
}

// The box of `this` (the Signature guarantees our template), or throws.
WrapBox* This(const v8::FunctionCallbackInfo<v8::Value>& info) {
  WrapBox* box = BoxOfReceiver(info);
  if (box == nullptr) {
    Throw(info.GetIsolate(), "Illegal invocation", true);
    return nullptr;
  }
  if (box->released) {
    Throw(info.GetIsolate(),
          box->kind == WrapBox::kCopy ? "ExternalCopy has been released"
                                      : "Reference has been released");
    return nullptr;
  }
  return box;
}

IsolateHolder* HolderOf(v8::Isolate* isolate) {
  return static_cast<IsolateHolder*>(isolate->GetData(0));
}

// The box's reference, usable for a call (a self reference gets its
// isolate, which is alive: its JavaScript is running).
ReferenceData RefOf(v8::Isolate* isolate, const WrapBox* box) {
  ReferenceData ref = box->ref;
  if (box->self) ref.holder = HolderOf(isolate)->shared_from_this();
  return ref;
}

// The host values of one operation (its key, value, receiver and arguments),
// which it owns. Up to kInPlace primitives live in the object itself, as do
// the first kInPlace arguments' list: a synchronous operation keeps its Args
// on the stack and allocates nothing for them; a queued one shares its Args
// (made once, never moved) with its job.
class Args {
 public:
  static constexpr size_t kInPlace = 4;
  // (User-provided, so that making one never zero-fills the room for values.)
  Args() {}   // NOLINT(modernize-use-equals-default)
  Args(const Args&) = delete;
  Args& operator=(const Args&) = delete;
  ~Args() {
    for (size_t i = 0; i < slots_used_; ++i) SlotAt(i)->~ivm_value();
  }
  // A new value in place for ToHost, or nullptr when all are taken.
  ivm_value_t* NewSlot() {
    if (slots_used_ == kInPlace) return nullptr;
    return new (slot_bytes_ + sizeof(ivm_value) * slots_used_++) ivm_value();
  }
  // Takes `v`, a value ToHost made (in place or allocated).
  void Keep(ivm_value_t* v) {
    if (slots_used_ == 0 || v != SlotAt(slots_used_ - 1)) owned_.emplace_back(v);
  }
  // Appends `v` (kept) to the argument list.
  void Push(const ivm_value_t* v) {
    if (count_ < kInPlace) {
      list_[count_++] = v;
      return;
    }
    if (more_.empty()) more_.assign(list_, list_ + count_);
    more_.push_back(v);
    ++count_;
  }
  // Appends `value` as an inline primitive (RefOp::inline_args) if it is
  // undefined, null, a boolean or a number and one of the first kInPlace
  // arguments: no host value is made for it. False: nothing appended.
  bool PushPrimitive(v8::Local<v8::Value> value) {
    if (count_ >= kInPlace || !FillPrimitiveFromV8(value, &prims_[count_])) return false;
    list_[count_++] = nullptr;
    return true;
  }
  const ivm_value_t* const* list() const { return count_ <= kInPlace ? list_ : more_.data(); }
  const ivm_primitive_t* prims() const { return prims_; }
  size_t count() const { return count_; }

 private:
  ivm_value_t* SlotAt(size_t i) {
    return std::launder(reinterpret_cast<ivm_value_t*>(slot_bytes_ + sizeof(ivm_value) * i));
  }
  alignas(ivm_value) unsigned char slot_bytes_[kInPlace * sizeof(ivm_value)];
  size_t slots_used_ = 0;
  std::vector<std::unique_ptr<ivm_value_t>> owned_;
  const ivm_value_t* list_[kInPlace] = {};
  ivm_primitive_t prims_[kInPlace];   // those of list_'s entries that are NULL
  std::vector<const ivm_value_t*> more_;   // the whole list, once longer than kInPlace
  size_t count_ = 0;
};

// A value of this isolate as a host value for another: primitives as they
// are, Reference and ExternalCopy objects as attachments, other values as a
// copy only when `copy`. A primitive goes in place into `in_place` when it
// has room (`*out` is then its value; Args::Keep tells), else into a new value.
bool ToHost(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
            v8::Local<v8::Value> value, bool copy, ivm_value_t** out,
            Args* in_place = nullptr) {
  const CallState* call = holder.CurrentCall();
  if (call == nullptr) return false;
  ivm_value_t* slot = nullptr;
  if (in_place != nullptr && !value->IsObject() && (slot = in_place->NewSlot()) != nullptr) {
    // What ResultFromV8 makes of a primitive (ValueFromV8), which runs no
    // JavaScript: nothing for a TryCatch to catch.
    if (ivm_error_t* err = FillValueFromV8(isolate, value, slot)) {
      err->name = "TypeError";
      ThrowError(isolate, err);
      return false;
    }
    *out = slot;
    return true;
  }
  uint32_t flags = 0;
  if (value->IsObject()) {
    if (BoxOf(value.As<v8::Object>()) == nullptr && !copy) {
      std::string type = DescribeType(isolate, value);
      bool vowel = !type.empty() && std::string("AEIOUaeiou").find(type[0]) != std::string::npos;
      Throw(isolate,
            std::string(vowel ? "an " : "a ") + type +
                " cannot be passed to another isolate without {copy: true} (or as a Reference)",
            true);
      return false;
    }
    flags = IVM_RESULT_COPY;
  }
  ivm_error_t* err = nullptr;
  {
    v8::TryCatch try_catch(isolate);
    err = ResultFromV8(holder, isolate, context, try_catch, *call, value, flags, out);
    if (err && (try_catch.HasCaught() || try_catch.HasTerminated())) {
      ivm_error_free(err);
      try_catch.ReThrow();
      return false;
    }
  }
  if (err) {   // thrown outside the TryCatch, which would swallow it
    err->name = "TypeError";
    ThrowError(isolate, err);
    return false;
  }
  return true;
}

// A host value (a result from another isolate) into this one.
void FromHost(v8::Isolate* isolate, v8::Local<v8::Context> context, ivm_value_t* value,
              v8::ReturnValue<v8::Value> rv) {
  std::unique_ptr<ivm_value_t> owned(value);
  IsolateHolder* holder = HolderOf(isolate);
  const CallState* call = holder->CurrentCall();
  if (call == nullptr) return;
  v8::Local<v8::Value> v;
  ivm_error_t* err = nullptr;
  {
    v8::TryCatch try_catch(isolate);
    err = ValueToV8(*holder, isolate, context, *call, value, &v);
    if (err == nullptr && v.IsEmpty()) {
      try_catch.ReThrow();
      return;
    }
  }
  if (err) {
    err->name = "TypeError";
    ThrowError(isolate, err);
    return;
  }
  rv.Set(v);
}

// A primitive result (the other isolate's CompleteCall wrote it: PrimitiveOutScope)
// into this one.
void PrimitiveFromHost(v8::Isolate* isolate, const ivm_primitive_t& p,
                       v8::ReturnValue<v8::Value> rv) {
  if (HolderOf(isolate)->CurrentCall() == nullptr) return;   // as FromHost
  switch (p.kind) {
    case IVM_VALUE_NUMBER: {
      double d = p.number;
      // A small integer is set without making a heap number (not -0).
      if (d >= -1073741824.0 && d <= 1073741823.0 && d == static_cast<int32_t>(d) &&
          !(d == 0 && std::signbit(d))) {
        rv.Set(static_cast<int32_t>(d));
      } else {
        rv.Set(d);
      }
      return;
    }
    case IVM_VALUE_BOOLEAN: rv.Set(p.boolean != 0); return;
    case IVM_VALUE_NULL: rv.SetNull(); return;
    default: rv.SetUndefined(); return;
  }
}

enum class Mode { kSync, kAsync, kIgnored, kSyncPromise };

bool IsSync(Mode mode) { return mode == Mode::kSync || mode == Mode::kSyncPromise; }

// An operation's Args: on the stack for a synchronous one, shared with its job otherwise.
class OpArgs {
 public:
  explicit OpArgs(Mode mode) {
    if (IsSync(mode)) {
      local_.emplace();
    } else {
      shared_ = std::make_shared<Args>();
    }
  }
  Args& operator*() { return shared_ ? *shared_ : *local_; }
  Args* operator->() { return &**this; }
  std::shared_ptr<Args> shared() const { return shared_; }

 private:
  std::optional<Args> local_;
  std::shared_ptr<Args> shared_;
};

// A synchronous call through a box's reference to another isolate's value,
// which uses `box->ref` in place, without taking shares of its holder, record
// and lease: release() (by JavaScript of this isolate that the call runs)
// leaves them to the end of the call. The box itself outlives the call: its
// object is the call's receiver, so not collected, and the isolate is not
// disposed of under a running call (a disposal waits for it, or is left to
// its end).
class RunningCall {
 public:
  explicit RunningCall(WrapBox* box) : box_(box) { ++box_->running; }
  ~RunningCall() {
    if (--box_->running == 0 && box_->released) box_->ref = ReferenceData();
  }
  RunningCall(const RunningCall&) = delete;
  RunningCall& operator=(const RunningCall&) = delete;

 private:
  WrapBox* box_;
};

ivm_error_t* RunBoxOp(v8::Isolate* isolate, WrapBox* box, const RefOp& op, const CallOptions& o,
                      ivm_value_t** out) {
  // The method checked the box on entry, but JavaScript ran since (getters of the options,
  // of the arguments, of objects copied): it may have released it.
  if (box->released) return MakeError(IVM_ERROR_DISPOSED, kReferenceReleased);
  if (box->self) return RunRefOp(RefOf(isolate, box), op, o, out);
  RunningCall running(box);
  return RunRefOp(box->ref, op, o, out);
}

// Runs `op` on the box's reference now (getSync, applySync...).
void SyncOp(const v8::FunctionCallbackInfo<v8::Value>& info, WrapBox* box, RefOp op,
            CallOptions o) {
  v8::Isolate* isolate = info.GetIsolate();
  ivm_value_t* out = nullptr;
  ivm_primitive_t primitive{};
  ivm_error_t* err = nullptr;
  {
    // A result the call gives in its plain form may come back as a primitive,
    // without an ivm_value (CompleteCall).
    PrimitiveOutScope direct((o.flags & ~IVM_RESULT_PROMISE) == 0 ? &primitive : nullptr);
    err = RunBoxOp(isolate, box, op, o, &out);
  }
  if (err) {
    ThrowError(isolate, err);
    return;
  }
  if (out == nullptr) return PrimitiveFromHost(isolate, primitive, info.GetReturnValue());
  FromHost(isolate, isolate->GetCurrentContext(), out, info.GetReturnValue());
}

// The job's outcome settles a promise of the calling isolate.
void SettleDone(void* user_data, const ivm_completion_t* c) {
  auto* d = static_cast<ivm_deferred_t*>(user_data);
  ivm_error_t* err = c->error ? ivm_deferred_reject(d, c->error)
                              : ivm_deferred_resolve(d, c->result.value);
  ivm_error_free(err);
  ivm_deferred_free(d);
}

void IgnoreDone(void*, const ivm_completion_t* c) { FreeCompletion(*c); }

// Queues `op` on the box's isolate (get, apply...): returns a promise, or
// undefined when `ignored`.
void AsyncOp(const v8::FunctionCallbackInfo<v8::Value>& info, WrapBox* box, RefOp op,
             CallOptions o, std::shared_ptr<Args> args, bool ignored) {
  v8::Isolate* isolate = info.GetIsolate();
  if (box->released) return Throw(isolate, kReferenceReleased);   // (as RunBoxOp)
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  ivm_done_fn done = IgnoreDone;
  void* user_data = nullptr;
  v8::Local<v8::Promise> promise;
  if (!ignored) {
    ivm_call call;
    call.holder = HolderOf(isolate);
    call.isolate = isolate;
    call.context = context;
    ivm_deferred_t* d = nullptr;
    if (ivm_error_t* err = ivm_call_defer(&call, &d)) {
      ThrowError(isolate, err);
      return;
    }
    promise = call.resolver->GetPromise();
    done = SettleDone;
    user_data = d;
  }
  ReferenceData ref = RefOf(isolate, box);
  ivm_error_t* err = Enqueue(
      ref.holder, IVM_COMPLETION_VALUE, done, user_data,
      [ref, op, o, args](ivm_completion_t* c) mutable -> ivm_error_t* {
        op.args = args->list();
        op.nargs = args->count();
        op.inline_args = args->prims();
        return RunRefOp(ref, op, o, &c->result.value);
      },
      nullptr);
  if (err) {
    if (user_data) ivm_deferred_free(static_cast<ivm_deferred_t*>(user_data));
    ThrowError(isolate, err);
    return;
  }
  if (!ignored) info.GetReturnValue().Set(promise);
}

// Runs `op` now (getSync, applySync, applySyncPromise) or queues it.
void RunOp(const v8::FunctionCallbackInfo<v8::Value>& info, WrapBox* box, const RefOp& op,
           const CallOptions& o, const OpArgs& args, Mode mode) {
  if (IsSync(mode)) return SyncOp(info, box, op, o);
  AsyncOp(info, box, op, o, args.shared(), mode == Mode::kIgnored);
}

// `value` as a host value that `args` owns (a key, a receiver); false after throwing.
bool AddArg(v8::Isolate* isolate, v8::Local<v8::Context> context, v8::Local<v8::Value> value,
            bool copy, Args& args, ivm_value_t** out) {
  if (!ToHost(*HolderOf(isolate), isolate, context, value, copy, out, &args)) {
    return false;
  }
  args.Keep(*out);
  return true;
}

// Each item of an `arguments` array (undefined: none) as a host value, given
// to `add`, which owns it (unless it is in place in `in_place`: Args::Keep),
// or with `in_place`, a primitive appended to it directly (Args::PushPrimitive);
// false after throwing.
template <class Add>
bool EachArgument(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                  v8::Local<v8::Value> arguments, bool copy, Args* in_place, Add&& add) {
  if (arguments->IsUndefined()) return true;
  if (!arguments->IsArray()) {
    Throw(isolate, "arguments must be an array", true);
    return false;
  }
  v8::Local<v8::Array> array = arguments.As<v8::Array>();
  for (uint32_t i = 0; i < array->Length(); ++i) {
    v8::Local<v8::Value> item;
    if (!array->Get(context, i).ToLocal(&item)) return false;
    // A primitive (not a string or BigInt) needs no host value: what ToHost
    // would make of it, with ToHost's check that this isolate runs a call.
    if (in_place != nullptr && holder.CurrentCall() != nullptr && in_place->PushPrimitive(item)) {
      continue;
    }
    ivm_value_t* v = nullptr;
    if (!ToHost(holder, isolate, context, item, copy, &v, in_place)) return false;
    add(v);
  }
  return true;
}

// The box of `this` for a method that only a reference to an isolate's
// value has (not a host reference), or throws.
WrapBox* ReferenceThis(const v8::FunctionCallbackInfo<v8::Value>& info) {
  WrapBox* box = This(info);
  if (box && box->kind != WrapBox::kReference) {
    Throw(info.GetIsolate(), "not supported by this Reference", true);
    return nullptr;
  }
  return box;
}

// A new record for the same value, registered with `holder` (isolate locked).
std::shared_ptr<ReferenceRecord> CopyRecord(IsolateHolder& holder, v8::Isolate* isolate,
                                            const ReferenceRecord& from) {
  auto record = std::make_shared<ReferenceRecord>();
  if (!from.released()) {
    record->value.Reset(isolate, from.value.Get(isolate));
    record->context.Reset(isolate, from.context.Get(isolate));
  }
  record->type_of = from.type_of;
  holder.Register(record);
  if (from.released()) holder.ReleaseLater(record.get());
  return record;
}

// --- Reference methods

// get, set and delete: an operation on one key, with its options last
// (key, [value,] options). A get's options also shape its result and may let
// it read inherited properties; a set's may copy the value.
template <RefOp::Kind K>
void KeyOp(const v8::FunctionCallbackInfo<v8::Value>& info, Mode mode) {
  static_assert(K != RefOp::kApply);
  constexpr bool kSet = K == RefOp::kSet;
  WrapBox* box = ReferenceThis(info);
  if (!box) return;
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  v8::Local<v8::Value> options = info[kSet ? 2 : 1];
  bool ok = true;
  bool copy = kSet && Flag(context, options, "copy", &ok);
  if (!ok) return;
  OpArgs args(mode);
  ivm_value_t *key = nullptr, *value = nullptr;
  if (!AddArg(isolate, context, info[0], false, *args, &key)) return;
  if (kSet && !AddArg(isolate, context, info[1], copy, *args, &value)) return;
  v8::Local<v8::Value> result_options = options;
  if (K != RefOp::kGet) result_options = v8::Undefined(isolate);
  CallOptions o;
  uint32_t get_flags = 0;
  if (!ReadResultOptions(context, options, result_options, &o, &get_flags)) return;
  RefOp op;
  op.kind = K;
  op.key = key;
  op.value = value;
  if (K == RefOp::kGet) op.get_flags = get_flags;
  RunOp(info, box, op, o, args, mode);
}

// A host reference's operation: the host function, told which one.
void HostOp(const v8::FunctionCallbackInfo<v8::Value>& info, WrapBox* box, uint32_t op,
            v8::Local<v8::Value> arguments) {
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  IsolateHolder& holder = *HolderOf(isolate);
  ivm_call call;
  call.holder = &holder;
  call.isolate = isolate;
  call.context = context;
  call.op = op;
  if (!EachArgument(holder, isolate, context, arguments, true, nullptr,
                    [&](ivm_value_t* v) { call.args.push_back(v); })) {
    return;
  }
  ivm_value_t* out = nullptr;
  ivm_error_t* err = nullptr;
  {
    HostScope host(holder);
    err = box->host->fn(box->host->user_data, &call, &out);
  }
  if (const CallState* current = holder.CurrentCall();
      current != nullptr && LeftStopped(holder, *current, err, out)) {
    return;
  }
  if (err) {
    if (out) ivm_value_free(out);
    ThrowHostError(holder, isolate, context, err);   // the host's own error, with its token
    return;
  }
  if (!call.resolver.IsEmpty()) {
    if (out) ivm_value_free(out);
    info.GetReturnValue().Set(call.resolver->GetPromise());
    return;
  }
  if (out) FromHost(isolate, context, out, info.GetReturnValue());
}

void Apply(const v8::FunctionCallbackInfo<v8::Value>& info, Mode mode) {
  WrapBox* box = This(info);
  if (!box) return;
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  if (box->kind == WrapBox::kHost) {
    uint32_t op = mode == Mode::kSync        ? IVM_CALL_APPLY
                  : mode == Mode::kAsync     ? IVM_CALL_APPLY_ASYNC
                  : mode == Mode::kIgnored   ? IVM_CALL_APPLY_IGNORED
                                             : IVM_CALL_APPLY_SYNC_PROMISE;
    return HostOp(info, box, op, info[1]);
  }
  if (box->kind != WrapBox::kReference) return Throw(isolate, "not supported by this Reference", true);
  v8::Local<v8::Value> options = info[2];
  CallOptions o;
  bool copy = false;
  // Without options (an inline check, unlike IsObject) there is nothing to read.
  if (!options->IsUndefined()) {
    bool ok = true;
    v8::Local<v8::Value> arg_options = Member(context, options, "arguments", &ok);
    if (!ok) return;
    copy = Flag(context, arg_options, "copy", &ok);
    v8::Local<v8::Value> result_options = Member(context, options, "result", &ok);
    if (!ok) return;
    uint32_t ignored_flags = 0;
    if (!ReadResultOptions(context, options, result_options, &o, &ignored_flags)) return;
  }
  if (mode == Mode::kSyncPromise) o.flags |= IVM_RESULT_PROMISE;
  OpArgs args(mode);
  IsolateHolder& holder = *HolderOf(isolate);
  ivm_value_t* receiver = nullptr;
  if (!info[0]->IsUndefined() && !AddArg(isolate, context, info[0], copy, *args, &receiver)) {
    return;
  }
  bool added = EachArgument(holder, isolate, context, info[1], copy, &*args,
                            [&](ivm_value_t* v) {
                              args->Keep(v);
                              args->Push(v);
                            });
  if (!added) return;
  RefOp op;
  op.kind = RefOp::kApply;
  op.receiver = receiver;
  op.args = args->list();
  op.nargs = args->count();
  op.inline_args = args->prims();
  RunOp(info, box, op, o, args, mode);
}

void Copy(const v8::FunctionCallbackInfo<v8::Value>& info, Mode mode) {
  WrapBox* box = This(info);
  if (!box) return;
  if (box->kind == WrapBox::kHost) return HostOp(info, box, IVM_CALL_COPY, v8::Undefined(info.GetIsolate()));
  if (box->kind != WrapBox::kReference) return Throw(info.GetIsolate(), "not supported by this Reference", true);
  CallOptions o;
  o.flags = IVM_RESULT_COPY;
  RefOp op;
  op.kind = RefOp::kGet;
  if (mode == Mode::kSync) return SyncOp(info, box, op, o);
  AsyncOp(info, box, op, o, std::make_shared<Args>(), false);
}

void Deref(const v8::FunctionCallbackInfo<v8::Value>& info) {
  WrapBox* box = This(info);
  if (!box) return;
  v8::Isolate* isolate = info.GetIsolate();
  if (box->kind != WrapBox::kReference || !box->self) {
    return Throw(isolate, "Cannot dereference this from current isolate", true);
  }
  if (box->ref.record->released()) return Throw(isolate, kReferenceReleased);
  info.GetReturnValue().Set(box->ref.record->value.Get(isolate));
}

void DerefInto(const v8::FunctionCallbackInfo<v8::Value>& info) {
  WrapBox* box = ReferenceThis(info);
  if (!box) return;
  v8::Isolate* isolate = info.GetIsolate();
  auto marker = std::make_unique<WrapBox>();
  marker->kind = WrapBox::kDeref;
  marker->ref = box->ref;
  marker->self = box->self;
  if (box->self) {   // its own record, released with the marker
    marker->ref.record = CopyRecord(*HolderOf(isolate), isolate, *box->ref.record);
  }
  v8::Local<v8::Object> obj;
  if (NewWrapper(*HolderOf(isolate), isolate, isolate->GetCurrentContext(), std::move(marker))
          .ToLocal(&obj)) {
    info.GetReturnValue().Set(obj);
  }
}

void Release(const v8::FunctionCallbackInfo<v8::Value>& info) {
  WrapBox* box = BoxOfReceiver(info);
  if (box == nullptr) return Throw(info.GetIsolate(), "Illegal invocation", true);
  box->released = true;
  if (box->self && box->ref.record) {
    box->ref.record->ResetLocked();
    HolderOf(info.GetIsolate())->ReleaseLater(box->ref.record.get());
  }
  if (box->running == 0) box->ref = ReferenceData();   // else by the last call (RunningCall)
  box->copy.reset();
}

void TypeOf(const v8::FunctionCallbackInfo<v8::Value>& info) {
  WrapBox* box = This(info);   // throws for a released reference
  if (box == nullptr) return;
  const std::string& t = box->kind == WrapBox::kHost ? box->host_type
                         : box->ref.record            ? box->ref.record->type_of
                                                      : box->host_type;
  info.GetReturnValue().Set(Str(info.GetIsolate(), t));
}

// --- ExternalCopy methods

void CopyCopy(const v8::FunctionCallbackInfo<v8::Value>& info, bool into) {
  WrapBox* box = This(info);
  if (!box) return;
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  bool ok = true;
  bool release = into && Flag(context, info[0], "release", &ok);
  bool transfer = into && Flag(context, info[0], "transferIn", &ok);
  if (!ok) return;
  // Insert through a marker (which moves the buffers with transferIn).
  auto value = std::make_unique<ivm_value>();
  Serialized s;
  Attachment a;
  a.kind = Attachment::kCopy;
  a.copy = box->copy;
  a.flags = transfer ? IVM_COPY_INTO_TRANSFER_IN : 0;
  s.attachments.push_back(std::move(a));
  s.stream.assign(kAttachmentStream, kAttachmentStreamLength);
  value->kind = IVM_VALUE_SERIALIZED;
  value->serialized = std::make_shared<Serialized>(std::move(s));
  if (release || transfer) {
    box->released = true;
    box->copy.reset();
  }
  FromHost(isolate, context, value.release(), info.GetReturnValue());
}

template <void (*F)(const v8::FunctionCallbackInfo<v8::Value>&, Mode), Mode M>
void Bind(const v8::FunctionCallbackInfo<v8::Value>& info) {
  F(info, M);
}

void IllegalConstructor(const v8::FunctionCallbackInfo<v8::Value>& info) {
  Throw(info.GetIsolate(), "Illegal constructor", true);
}

v8::Local<v8::FunctionTemplate> MakeClass(v8::Isolate* isolate, const char* name) {
  v8::Local<v8::FunctionTemplate> tpl = v8::FunctionTemplate::New(isolate, IllegalConstructor);
  tpl->SetClassName(v8::String::NewFromUtf8(isolate, name).ToLocalChecked());
  tpl->InstanceTemplate()->SetInternalFieldCount(2);
  return tpl;
}

void Method(v8::Isolate* isolate, v8::Local<v8::FunctionTemplate> tpl, const char* name,
            v8::FunctionCallback fn) {
  v8::Local<v8::Signature> sig = v8::Signature::New(isolate, tpl);
  tpl->PrototypeTemplate()->Set(
      v8::String::NewFromUtf8(isolate, name, v8::NewStringType::kInternalized).ToLocalChecked(),
      v8::FunctionTemplate::New(isolate, fn, v8::Local<v8::Value>(), sig, 0,
                                v8::ConstructorBehavior::kThrow),
      v8::DontEnum);
}

}  // namespace

namespace {

WrapperTemplates& Templates(IsolateHolder& holder, v8::Isolate* isolate) {
  auto* t = static_cast<WrapperTemplates*>(isolate->GetData(kTemplatesSlot));
  if (t != nullptr && !t->reference.IsEmpty()) return *t;
  auto created = std::make_shared<WrapperTemplates>();
  v8::Local<v8::FunctionTemplate> ref = MakeClass(isolate, "Reference");
  Method(isolate, ref, "get", Bind<KeyOp<RefOp::kGet>, Mode::kAsync>);
  Method(isolate, ref, "getSync", Bind<KeyOp<RefOp::kGet>, Mode::kSync>);
  Method(isolate, ref, "getIgnored", Bind<KeyOp<RefOp::kGet>, Mode::kIgnored>);
  Method(isolate, ref, "set", Bind<KeyOp<RefOp::kSet>, Mode::kAsync>);
  Method(isolate, ref, "setSync", Bind<KeyOp<RefOp::kSet>, Mode::kSync>);
  Method(isolate, ref, "setIgnored", Bind<KeyOp<RefOp::kSet>, Mode::kIgnored>);
  Method(isolate, ref, "delete", Bind<KeyOp<RefOp::kDelete>, Mode::kAsync>);
  Method(isolate, ref, "deleteSync", Bind<KeyOp<RefOp::kDelete>, Mode::kSync>);
  Method(isolate, ref, "deleteIgnored", Bind<KeyOp<RefOp::kDelete>, Mode::kIgnored>);
  Method(isolate, ref, "apply", Bind<Apply, Mode::kAsync>);
  Method(isolate, ref, "applySync", Bind<Apply, Mode::kSync>);
  Method(isolate, ref, "applyIgnored", Bind<Apply, Mode::kIgnored>);
  Method(isolate, ref, "applySyncPromise", Bind<Apply, Mode::kSyncPromise>);
  Method(isolate, ref, "copy", Bind<Copy, Mode::kAsync>);
  Method(isolate, ref, "copySync", Bind<Copy, Mode::kSync>);
  Method(isolate, ref, "deref", Deref);
  Method(isolate, ref, "derefInto", DerefInto);
  Method(isolate, ref, "release", Release);
  ref->PrototypeTemplate()->SetAccessorProperty(
      v8::String::NewFromUtf8Literal(isolate, "typeof"),
      v8::FunctionTemplate::New(isolate, TypeOf, v8::Local<v8::Value>(),
                                v8::Signature::New(isolate, ref), 0,
                                v8::ConstructorBehavior::kThrow),
      v8::Local<v8::FunctionTemplate>(), v8::DontEnum);
  created->reference.Reset(isolate, ref);
  created->deref.Reset(isolate, MakeClass(isolate, "DereferencedReference"));
  v8::Local<v8::FunctionTemplate> copy = MakeClass(isolate, "ExternalCopy");
  Method(isolate, copy, "copy", [](const v8::FunctionCallbackInfo<v8::Value>& info) {
    CopyCopy(info, false);
  });
  Method(isolate, copy, "copyInto", [](const v8::FunctionCallbackInfo<v8::Value>& info) {
    CopyCopy(info, true);
  });
  Method(isolate, copy, "release", Release);
  created->copy.Reset(isolate, copy);
  isolate->SetData(kTemplatesSlot, created.get());
  holder.Register(created);
  return *created;
}

}  // namespace

bool Freeze(v8::Local<v8::Context> context, v8::Local<v8::Object> obj) {
  return obj->SetIntegrityLevel(context, v8::IntegrityLevel::kFrozen).FromMaybe(false);
}

v8::MaybeLocal<v8::Object> NewWrapper(IsolateHolder& holder, v8::Isolate* isolate,
                                      v8::Local<v8::Context> context,
                                      std::unique_ptr<WrapBox> box) {
  WrapperTemplates& t = Templates(holder, isolate);
  v8::Local<v8::FunctionTemplate> tpl = box->kind == WrapBox::kCopy    ? t.copy.Get(isolate)
                                        : box->kind == WrapBox::kDeref ? t.deref.Get(isolate)
                                                                       : t.reference.Get(isolate);
  v8::Local<v8::Object> obj;
  if (!tpl->InstanceTemplate()->NewInstance(context).ToLocal(&obj)) return {};
  // Frozen, with its prototype and constructor, as isolated-vm's: JavaScript
  // cannot replace a method that other code in the isolate relies on. (A
  // derefInto() marker has no methods: it stays an ordinary object.)
  bool methods = box->kind != WrapBox::kDeref;
  v8::Local<v8::Value> proto = obj->GetPrototype();
  if (!proto->IsObject() || !Freeze(context, proto.As<v8::Object>()) ||
      (methods && !Freeze(context, obj))) {
    return {};
  }
  v8::Local<v8::Value> ctor;
  if (!proto.As<v8::Object>()
           ->Get(context, v8::String::NewFromUtf8Literal(isolate, "constructor"))
           .ToLocal(&ctor) ||
      (ctor->IsObject() && !Freeze(context, ctor.As<v8::Object>()))) {
    return {};
  }
  auto record = std::make_shared<WrapRecord>();
  record->box = std::move(box);
  record->holder = &holder;
  obj->SetAlignedPointerInInternalField(0, record.get());
  obj->SetAlignedPointerInInternalField(1, const_cast<char*>(&kWrapTag));
  record->object.Reset(isolate, obj);
  record->object.SetWeak(record.get(), OnWrapperCollected, v8::WeakCallbackType::kParameter);
  WrapBox& b = *record->box;
  bool pins = (b.kind == WrapBox::kReference || b.kind == WrapBox::kDeref) && !b.self &&
              b.ref.holder && b.ref.holder.get() != &holder;
  holder.Register(record);
  if (pins) {
    record->pinned = kPinnedIsolateBytes;
    holder.ReportPinned(kPinnedIsolateBytes);
  }
  return obj;
}

v8::MaybeLocal<v8::Object> WrapReference(IsolateHolder& holder, v8::Isolate* isolate,
                                         v8::Local<v8::Context> context,
                                         const ReferenceData& ref) {
  auto box = std::make_unique<WrapBox>();
  box->kind = WrapBox::kReference;
  if (ref.holder.get() == &holder) {
    box->self = true;
    box->ref.record = CopyRecord(holder, isolate, *ref.record);
  } else {
    box->ref = ref;
  }
  return NewWrapper(holder, isolate, context, std::move(box));
}

v8::MaybeLocal<v8::Object> WrapHostReference(IsolateHolder& holder, v8::Isolate* isolate,
                                             v8::Local<v8::Context> context,
                                             const std::shared_ptr<CallbackData>& host,
                                             const char* type_of) {
  auto box = std::make_unique<WrapBox>();
  box->kind = WrapBox::kHost;
  box->host = host;
  box->host_type = type_of;
  return NewWrapper(holder, isolate, context, std::move(box));
}

v8::MaybeLocal<v8::Object> WrapCopy(IsolateHolder& holder, v8::Isolate* isolate,
                                    v8::Local<v8::Context> context,
                                    const std::shared_ptr<CopyData>& copy) {
  auto box = std::make_unique<WrapBox>();
  box->kind = WrapBox::kCopy;
  box->copy = copy;
  return NewWrapper(holder, isolate, context, std::move(box));
}

bool WrappedAttachment(IsolateHolder& holder, v8::Isolate* isolate,
                       v8::Local<v8::Context> context, v8::Local<v8::Object> obj,
                       Attachment* out) {
  WrapBox* box = BoxOf(obj);
  if (box == nullptr || box->released) return false;
  switch (box->kind) {
    case WrapBox::kReference:
    case WrapBox::kDeref:
      out->kind = Attachment::kReference;
      if (box->self) {   // leaving the isolate: a full, independent reference
        if (box->ref.record->released()) return false;
        out->reference = MakeReference(holder, isolate, context,
                                       box->ref.record->value.Get(isolate));
      } else {
        out->reference = std::make_shared<ReferenceData>(box->ref);
      }
      out->flags = box->kind == WrapBox::kDeref ? IVM_ATTACH_DEREF : 0;
      return true;
    case WrapBox::kCopy:
      out->kind = Attachment::kCopy;
      out->copy = box->copy;
      out->flags = IVM_COPY_AS_OBJECT;
      return true;
    case WrapBox::kHost:
      out->kind = Attachment::kCallback;
      out->callback = box->host;
      out->flags = IVM_ATTACH_AS_REFERENCE;
      return true;
  }
  return false;
}

bool IsWrapper(v8::Local<v8::Object> obj) { return BoxOf(obj) != nullptr; }

}  // namespace ivm
