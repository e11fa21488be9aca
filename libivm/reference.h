// reference.h — references to values inside an isolate. Nothing here is ABI.
#ifndef IVM_REFERENCE_H
#define IVM_REFERENCE_H

#include "context.h"

namespace ivm {

struct RemoteReference;

class ReferenceRecord final : public Resource {
 public:
  void ResetLocked() override {
    value.Reset();
    context.Reset();
  }
  v8::Global<v8::Value> value;
  v8::Global<v8::Context> context;   // where calls through the reference run
  std::string type_of;               // `typeof value`, fixed at creation
};

// A reference in transit (a value of kind IVM_VALUE_REFERENCE, an attachment).
struct ReferenceData {
  std::shared_ptr<IsolateHolder> holder;
  std::shared_ptr<ReferenceRecord> record;
  std::shared_ptr<Lease> lease;
  std::shared_ptr<RemoteReference> remote;   // set instead: a worker isolate's (remote.h)
};

inline constexpr char kReferenceReleased[] = "Reference has been released";

// One operation through a reference.
struct RefOp {
  enum Kind { kGet, kSet, kDelete, kApply } kind = kGet;
  const ivm_value_t* key = nullptr;        // kGet (NULL: the value itself), kSet, kDelete
  uint32_t get_flags = 0;                  // kGet: IVM_GET_*
  const ivm_value_t* value = nullptr;      // kSet
  const ivm_value_t* receiver = nullptr;   // kApply (NULL: undefined)
  const ivm_value_t* const* args = nullptr;
  size_t nargs = 0;
  // kApply from a Reference object (wrapper.cc): an argument that is NULL in
  // `args` is the primitive at the same index here (undefined, null, a boolean
  // or a number, read from the calling isolate), made without a host value.
  // NULL for every other caller, to whom a NULL argument is an error.
  const ivm_primitive_t* inline_args = nullptr;
};

// Runs `op` in the reference's isolate (a call, with `o`'s timeout and result flags).
ivm_error_t* RunRefOp(const ReferenceData& ref, const RefOp& op, const CallOptions& o,
                      ivm_value_t** out);

// A new reference to `value` (isolate locked, `context` entered).
std::shared_ptr<ReferenceData> MakeReference(IsolateHolder& holder, v8::Isolate* isolate,
                                             v8::Local<v8::Context> context,
                                             v8::Local<v8::Value> value);

}  // namespace ivm

struct ivm_reference : ivm::LiveCounted {
  ivm::ReferenceData data;
};

#endif  // IVM_REFERENCE_H
