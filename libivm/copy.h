// copy.h — structured copies of values between isolates and the host.
//
// A copy is a byte stream in the ivm copy format (a subset of Python's pickle
// protocol 5, described in docs/values.md) plus attachments: ArrayBuffer
// contents kept out of the stream, and host objects the stream refers to by
// index (ExternalCopy markers). Nothing here is ABI. copy.cc lists the files
// that implement it, one concept each.
#ifndef IVM_COPY_H
#define IVM_COPY_H

#include "internal.h"

namespace ivm {

class CopyData;
struct ReferenceData;
struct CallbackData;

struct Attachment {
  enum Kind {
    kBuffer,        // ArrayBuffer contents (store)
    kSharedBuffer,  // SharedArrayBuffer contents, shared with its isolates (store)
    kBorrowed,      // ArrayBuffer contents in caller memory valid for one call
    kCopy,          // an ExternalCopy to insert (copy_into marker)
    kReference,     // a Reference (flags: IVM_ATTACH_DEREF inserts its value)
    kCallback,      // a host function (callback)
  };
  Kind kind = kBuffer;
  std::shared_ptr<v8::BackingStore> store;
  const void* data = nullptr;   // kBorrowed
  size_t length = 0;            // kBorrowed
  std::shared_ptr<CopyData> copy;   // kCopy
  std::shared_ptr<ReferenceData> reference;   // kReference
  std::shared_ptr<CallbackData> callback;     // kCallback
  uint32_t flags = 0;               // kCopy: IVM_COPY_INTO_*; kReference: IVM_ATTACH_*
  bool moved = false;   // kBuffer: the store belongs to this copy alone (transferred)
  uint64_t origin = 0;  // kSharedBuffer: the isolate it was copied from (unique_id), 0: none

  size_t ByteLength() const;
  const void* Data() const;
  // *out becomes a kBuffer attachment owning a copy of the bytes (host
  // memory); false when that memory is not available.
  static bool CopyOf(const void* data, size_t length, Attachment* out);
};

struct Serialized {
  Serialized() = default;
  Serialized(Serialized&&) = default;
  Serialized& operator=(Serialized&&) = default;
  Serialized(const Serialized&) = default;
  Serialized& operator=(const Serialized&) = default;
  ~Serialized();   // a large stream's buffer is kept for the next copy (copy_buffers.cc)
  std::string stream;
  std::vector<Attachment> attachments;
  size_t ByteSize() const;
  uint32_t Attach(Attachment a);   // returns its index
};

// copy_buffers.cc: the buffers of large copies, kept from one copy to the next.
// Makes `s` an empty string with room for `want` bytes, from a kept buffer when one fits.
void ReserveStream(std::string& s, size_t want);
// Keeps the buffer of `s` (left empty) for a later ReserveStream, when it is large.
void KeepStream(std::string& s);
// A malloc'd buffer of at least `want` bytes (*capacity: how many), kept or new; nullptr
// when out of memory. KeepRawBuffer keeps or frees such a buffer (or any malloc'd one).
void* TakeRawBuffer(size_t want, size_t* capacity);
void KeepRawBuffer(void* p, size_t capacity);

// The immutable payload of an ExternalCopy (shared by the handle and every
// marker made from it). Counts toward ivm_external_copy_total_size().
class CopyData : public LiveCounted {
 public:
  explicit CopyData(Serialized s);
  ~CopyData();
  CopyData(const CopyData&) = delete;
  CopyData& operator=(const CopyData&) = delete;
  const Serialized& value() const { return value_; }
  uint64_t size() const { return size_; }
  uint64_t byte_length() const { return byte_length_; }
  // Moves the transferred buffers out (once): later reads fail.
  bool TakeForTransfer(Serialized* out);
  bool consumed() const { return consumed_.load(std::memory_order_acquire); }

 private:
  std::mutex mutex_;
  Serialized value_;
  uint64_t size_ = 0;
  uint64_t byte_length_ = 0;
  std::atomic<bool> consumed_{false};
};

// A BigInt magnitude (little-endian 64-bit words) as pickle's LONG data:
// little-endian two's complement, as short as the sign allows.
std::string TwosComplement(bool negative, const uint64_t* words, size_t count);

// The stream of a copy that is only its attachment 0: `_att(0)`.
inline constexpr char kAttachmentStream[] = "\x80\x05" "civm._copy\n_att\nK\x00\x85R.";
inline constexpr size_t kAttachmentStreamLength = sizeof kAttachmentStream - 1;

// Whether `value` is a serialized value (a copy), which can hold attachments.
inline bool IsSerialized(const ivm_value_t* value) {
  return value && value->kind == IVM_VALUE_SERIALIZED && value->serialized;
}
// The ABI's error for a value that is not.
inline ivm_error_t* CheckSerialized(const ivm_value_t* value) {
  return IsSerialized(value) ? nullptr : InvalidArgument("not a serialized value");
}
// Appends `a` to the attachments of serialized `value`; *index_out (if not
// NULL) tells its index.
inline void AppendAttachment(ivm_value_t* value, Attachment a, size_t* index_out) {
  auto& atts = value->serialized->attachments;
  if (index_out) *index_out = atts.size();
  atts.push_back(std::move(a));
}

uint64_t CopyTotalSize();
uint64_t CopyLimit();
uint64_t SetCopyLimit(uint64_t bytes);   // returns the previous limit
// A copy stream holding one primitive host value.
ivm_error_t* PrimitiveStream(const ivm_value_t* value, std::string* out);

struct WriteOptions {
  bool transfer_out = false;   // detach ArrayBuffers and move their stores
};

// JS → copy (copy_writer.cc). Runs getters (under the call's timeout); fails with TRANSFER for
// values that have no copy, naming their path. Sets *threw (and returns NULL)
// when a getter threw or the call was stopped: the caller's TryCatch knows.
ivm_error_t* Serialize(IsolateHolder& holder, v8::Isolate* isolate,
                       v8::Local<v8::Context> context, const CallState& call,
                       v8::Local<v8::Value> value, const WriteOptions& options,
                       Serialized* out, bool* threw);

// Serialize's fast path (copy_translate.cc), for plain data. True when it
// is done: *out holds the copy, or *threw is set (the call was stopped).
// False, with *out empty, for what the general writer must do.
bool FastSerialize(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                   const CallState& call, v8::Local<v8::Value> value, Serialized* out,
                   bool* threw);

// Copy → JS (copy_reader.cc) in the current context. Empty *out with NULL returned: an
// exception is pending (or the call was stopped).
ivm_error_t* Deserialize(IsolateHolder& holder, v8::Isolate* isolate,
                         v8::Local<v8::Context> context, const CallState& call,
                         const Serialized& in, v8::Local<v8::Value>* out);

// Deserialize's fast path (copy_json.cc), for streams of plain JSON data.
// True when it is done: *out holds the value, or is empty with an exception
// pending (or the call stopped). False, without touching the isolate, for
// what the general reader must do.
bool DeserializeJson(IsolateHolder& holder, v8::Isolate* isolate, v8::Local<v8::Context> context,
                     const CallState& call, const Serialized& in, v8::Local<v8::Value>* out);

// A host value → JS (primitives directly, copies through Deserialize).
ivm_error_t* ValueToV8(IsolateHolder& holder, v8::Isolate* isolate,
                       v8::Local<v8::Context> context, const CallState& call,
                       const ivm_value_t* value, v8::Local<v8::Value>* out);

// The result of a call in the form its IVM_RESULT_* flags ask for (result.cc).
ivm_error_t* ResultFromV8(IsolateHolder& holder, v8::Isolate* isolate,
                          v8::Local<v8::Context> context, v8::TryCatch& try_catch,
                          const CallState& call, v8::Local<v8::Value> value, uint32_t flags,
                          ivm_value_t** out);

}  // namespace ivm

struct ivm_external_copy : ivm::LiveCounted {
  std::mutex mutex;
  std::shared_ptr<ivm::CopyData> data;   // null once released
};

#endif  // IVM_COPY_H
