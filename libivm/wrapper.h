// wrapper.h — Reference and ExternalCopy objects inside isolates. Not ABI.
#ifndef IVM_WRAPPER_H
#define IVM_WRAPPER_H

#include "internal.h"

namespace ivm {

struct Attachment;
struct CallbackData;
class CopyData;
struct ReferenceData;
struct WrapBox;

// A Reference object (isolated-vm's JavaScript API) for `ref`, in the
// current isolate (locked, `context` entered).
v8::MaybeLocal<v8::Object> WrapReference(IsolateHolder& holder, v8::Isolate* isolate,
                                         v8::Local<v8::Context> context,
                                         const ReferenceData& ref);
// A Reference object whose operations call a host function.
v8::MaybeLocal<v8::Object> WrapHostReference(IsolateHolder& holder, v8::Isolate* isolate,
                                             v8::Local<v8::Context> context,
                                             const std::shared_ptr<CallbackData>& host,
                                             const char* type_of);
// An ExternalCopy object.
v8::MaybeLocal<v8::Object> WrapCopy(IsolateHolder& holder, v8::Isolate* isolate,
                                    v8::Local<v8::Context> context,
                                    const std::shared_ptr<CopyData>& copy);
v8::MaybeLocal<v8::Object> NewWrapper(IsolateHolder& holder, v8::Isolate* isolate,
                                      v8::Local<v8::Context> context,
                                      std::unique_ptr<WrapBox> box);
// Freezes `obj` (Object.freeze without running JavaScript): the API objects ivm
// installs in isolates (these, host functions) are frozen, as isolated-vm's are.
bool Freeze(v8::Local<v8::Context> context, v8::Local<v8::Object> obj);
// Whether `obj` is one of these objects; the attachment that carries it.
bool IsWrapper(v8::Local<v8::Object> obj);
bool WrappedAttachment(IsolateHolder& holder, v8::Isolate* isolate,
                       v8::Local<v8::Context> context, v8::Local<v8::Object> obj,
                       Attachment* out);

}  // namespace ivm

#endif  // IVM_WRAPPER_H
