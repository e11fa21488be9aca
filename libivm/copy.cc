// copy.cc — structured copies: the pieces the writer, the reader and the
// ABI share.
//
// The format is a subset of Python's pickle protocol 5 (docs/values.md lists
// the opcodes and the `ivm._copy` names it uses). It was chosen because the
// main host, Python, decodes it in C (pickle) at several times the speed of
// any per-node decoding, and it already has what a structured copy needs:
// shared references and cycles (the memo), exact doubles, arbitrary-precision
// integers without decimal conversion, byte strings and sets. Writer and
// reader are libivm's own; the stream never contains anything JavaScript
// can choose besides length-prefixed data.
//
// The files of copies, one concept each:
//   copy.cc            attachments, ExternalCopy payloads, the size limit,
//                      primitive streams, host values into JavaScript
//   pickle.h           the format's bytes and the emitter both encoders use
//   copy_writer.cc     JavaScript → stream, through the V8 API (Serialize)
//   copy_translate.cc  the writer's fast path, from V8's serializer output
//   copy_reader.cc     stream → JavaScript (Deserialize)
//   copy_json.cc       the reader's fast path: plain JSON data through JSON.parse
//   copy_buffers.cc    the buffers of large copies, kept from one copy to the next
//   result.cc          a call's result in the form its flags ask for
#include "copy.h"
#include "pickle.h"
#include "reference.h"
#include "remote.h"
#include "wrapper.h"

namespace ivm {

namespace {

constexpr uint64_t kDefaultCopyLimit = 1ull << 31;

std::atomic<uint64_t> g_copy_total{0};
std::atomic<uint64_t> g_copy_limit{kDefaultCopyLimit};

}  // namespace

// ---------------------------------------------------------------------------
// Attachments, copies

size_t Attachment::ByteLength() const {
  if (kind == kBorrowed) return length;
  if (store) return store->ByteLength();
  return 0;
}

const void* Attachment::Data() const {
  if (kind == kBorrowed) return data;
  if (store) return store->Data();
  return nullptr;
}

bool Attachment::CopyOf(const void* data, size_t length, Attachment* out) {
  // A BackingStore frees itself through V8's platform, which host-side
  // buffers may otherwise outlive or predate (made before any isolate).
  EnsurePlatform();
  void* copy = length ? AllocateMemory(length, false) : nullptr;
  if (length && copy == nullptr) return false;
  if (length) std::memcpy(copy, data, length);
  out->kind = kBuffer;
  out->store = v8::ArrayBuffer::NewBackingStore(
      copy, length, [](void* p, size_t n, void*) { FreeMemory(p, n); }, nullptr);
  out->moved = true;
  return true;
}

uint32_t Serialized::Attach(Attachment a) {
  attachments.push_back(std::move(a));
  return static_cast<uint32_t>(attachments.size() - 1);
}

size_t Serialized::ByteSize() const {
  size_t n = stream.size();
  for (const Attachment& a : attachments) {
    if (a.kind == Attachment::kCopy) {
      if (a.copy) n += a.copy->size();
    } else {
      n += a.ByteLength();
    }
  }
  return n;
}

CopyData::CopyData(Serialized s) : value_(std::move(s)) {
  size_ = value_.ByteSize();
  for (const Attachment& a : value_.attachments) {
    if (a.kind != Attachment::kCopy) byte_length_ += a.ByteLength();
  }
  g_copy_total.fetch_add(size_, std::memory_order_relaxed);
}

CopyData::~CopyData() {
  if (!consumed_.load()) g_copy_total.fetch_sub(size_, std::memory_order_relaxed);
}

bool CopyData::TakeForTransfer(Serialized* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (consumed_.load()) return false;
  *out = std::move(value_);
  value_ = Serialized();
  consumed_.store(true, std::memory_order_release);
  g_copy_total.fetch_sub(size_, std::memory_order_relaxed);
  return true;
}

std::string TwosComplement(bool negative, const uint64_t* words, size_t count) {
  std::string bytes;
  bytes.reserve(count * 8 + 1);
  for (size_t k = 0; k < count; ++k) {
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>(words[k] >> (8 * i)));
  }
  while (!bytes.empty() && bytes.back() == 0) bytes.pop_back();
  bytes.push_back(0);   // room for the sign bit
  if (negative) {
    unsigned carry = 1;
    for (char& c : bytes) {
      unsigned v = static_cast<unsigned char>(~static_cast<unsigned char>(c)) + carry;
      c = static_cast<char>(v);
      carry = v >> 8;
    }
  }
  // Trim redundant sign bytes.
  while (bytes.size() > 1) {
    auto last = static_cast<unsigned char>(bytes.back());
    auto prev = static_cast<unsigned char>(bytes[bytes.size() - 2]);
    if ((last == 0 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80))) {
      bytes.pop_back();
    } else {
      break;
    }
  }
  return bytes;
}


uint64_t CopyTotalSize() { return g_copy_total.load(std::memory_order_relaxed); }
uint64_t CopyLimit() { return g_copy_limit.load(std::memory_order_relaxed); }
uint64_t SetCopyLimit(uint64_t bytes) {
  return g_copy_limit.exchange(bytes ? bytes : kDefaultCopyLimit, std::memory_order_relaxed);
}


// ---------------------------------------------------------------------------
// Streams of one primitive (ExternalCopy of a host value)

ivm_error_t* PrimitiveStream(const ivm_value_t* value, std::string* out) {
  pickle::Emitter e(*out);
  e.Begin(/*framed=*/false);
  switch (value->kind) {
    case IVM_VALUE_UNDEFINED: e.Undefined(); break;
    case IVM_VALUE_NULL: e.None(); break;
    case IVM_VALUE_BOOLEAN: e.Boolean(value->boolean); break;
    case IVM_VALUE_NUMBER: e.Number(value->number); break;
    case IVM_VALUE_STRING: e.Text(value->str); break;
    case IVM_VALUE_BIGINT:
      e.BigInt(TwosComplement(value->negative, value->words.data(), value->words.size()));
      break;
    default:
      return InvalidArgument("a value of unknown kind");
  }
  e.End();
  return nullptr;
}

// ---------------------------------------------------------------------------
// Host values into JavaScript

ivm_error_t* ValueToV8(IsolateHolder& holder, v8::Isolate* isolate,
                       v8::Local<v8::Context> context, const CallState& call,
                       const ivm_value_t* value, v8::Local<v8::Value>* out) {
  *out = v8::Local<v8::Value>();
  switch (value->kind) {
    case IVM_VALUE_UNDEFINED: *out = v8::Undefined(isolate); return nullptr;
    case IVM_VALUE_NULL: *out = v8::Null(isolate); return nullptr;
    case IVM_VALUE_BOOLEAN: *out = v8::Boolean::New(isolate, value->boolean); return nullptr;
    case IVM_VALUE_NUMBER: *out = NumberToV8(isolate, value->number); return nullptr;
    case IVM_VALUE_STRING: {
      ivm_error_t* err = nullptr;
      v8::Local<v8::String> str;
      if (!NewString(isolate, value->str.data(), value->str.size(), &err).ToLocal(&str)) {
        return err ? err : MakeError(IVM_ERROR_TRANSFER, "string too long");
      }
      *out = str;
      return nullptr;
    }
    case IVM_VALUE_BIGINT: {
      if (value->words.size() > (1u << 18)) {
        return MakeError(IVM_ERROR_TRANSFER, "integer too large for a BigInt");
      }
      v8::Local<v8::BigInt> big;
      if (v8::BigInt::NewFromWords(context, value->negative ? 1 : 0,
                                   static_cast<int>(value->words.size()), value->words.data())
              .ToLocal(&big)) {
        *out = big;
      }
      return nullptr;   // empty: exception pending
    }
    case IVM_VALUE_SERIALIZED:
      if (!value->serialized) return InvalidArgument("empty serialized value");
      return Deserialize(holder, isolate, context, call, *value->serialized, out);
    case IVM_VALUE_EXTERNAL_COPY: {
      // An ExternalCopy result (another isolate's {externalCopy: true}):
      // an ExternalCopy object here.
      if (!value->copy) return InvalidArgument("empty external copy value");
      v8::Local<v8::Object> obj;
      if (WrapCopy(holder, isolate, context, value->copy).ToLocal(&obj)) *out = obj;
      return nullptr;
    }
    case IVM_VALUE_REFERENCE: {
      if (!value->reference) return InvalidArgument("empty reference value");
      if (value->reference->remote) {   // rref: References do not cross between processes
        return remote::CrossProcess("A Reference into a worker process cannot enter an inline "
                                    "isolate");
      }
      if (value->reference->record->released()) {
        return MakeError(IVM_ERROR_DISPOSED, kReferenceReleased);
      }
      v8::Local<v8::Object> obj;
      if (WrapReference(holder, isolate, context, *value->reference).ToLocal(&obj)) *out = obj;
      return nullptr;
    }
    default:
      return InvalidArgument("a value of unknown kind");
  }
}

}  // namespace ivm
