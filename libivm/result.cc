// result.cc — a call's result in the form its flags ask for.
//
// Every call that returns a JavaScript value (eval, script runs, reference
// get and apply, callback arguments) ends here: discarded, a Reference, a
// primitive host value, a copy, an ExternalCopy, or the text of
// util.inspect(value) (host_inspect.cc), as its IVM_RESULT_* flags say. A copy runs the writer (Serialize), which may run getters: their
// exceptions and the call's stop end as the call's error.
#include "copy.h"
#include "host_inspect.h"
#include "reference.h"

namespace ivm {

// About how much text an IVM_RESULT_INSPECT result may hold (ivm.h says 1 MiB).
constexpr size_t kInspectResultBudget = size_t{1} << 20;

ivm_error_t* ResultFromV8(IsolateHolder& holder, v8::Isolate* isolate,
                          v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                          const CallState& call, v8::Local<v8::Value> value, uint32_t flags,
                          ivm_value_t** out) {
  if (flags & IVM_RESULT_DISCARD) {
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_UNDEFINED;
    *out = v.release();
    return nullptr;
  }
  if (flags & IVM_RESULT_REFERENCE) {
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_REFERENCE;
    v->reference = MakeReference(holder, isolate, context, value);
    *out = v.release();
    return nullptr;
  }
  if (flags & IVM_RESULT_INSPECT) {
    inspect::Options options;
    options.budget = kInspectResultBudget;
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_STRING;
    v->str = inspect::Inspect(context, value, options);
    if (try_catch.HasTerminated() || holder.Stopped(call) || isolate->IsExecutionTerminating()) {
      return holder.Fail(context, try_catch, call);
    }
    *out = v.release();
    return nullptr;
  }
  bool external = (flags & IVM_RESULT_EXTERNAL_COPY) != 0;
  bool structured = external || (flags & IVM_RESULT_COPY) != 0;
  if (!external &&
      (!structured || (!value->IsObject() && !value->IsSymbol() && !value->IsBigInt()))) {
    ivm_error_t* err = ValueFromV8(isolate, context, value, out);
    if (err && !structured && value->IsObject()) {
      err->message += " (ask for a copy, an external copy or a reference)";
    }
    return err;
  }
  auto serialized = std::make_shared<Serialized>();
  WriteOptions options;
  options.transfer_out = (flags & IVM_RESULT_TRANSFER_OUT) != 0;
  bool threw = false;
  ivm_error_t* err =
      Serialize(holder, isolate, context, call, value, options, serialized.get(), &threw);
  if (err) return err;
  if (threw || try_catch.HasCaught() || try_catch.HasTerminated() || holder.Stopped(call) ||
      isolate->IsExecutionTerminating()) {
    return holder.Fail(context, try_catch, call);
  }
  auto v = std::make_unique<ivm_value>();
  if (external) {
    v->kind = IVM_VALUE_EXTERNAL_COPY;
    v->copy = std::make_shared<CopyData>(std::move(*serialized));
  } else {
    v->kind = IVM_VALUE_SERIALIZED;
    v->serialized = std::move(serialized);
  }
  *out = v.release();
  return nullptr;
}

}  // namespace ivm
