// wire_value.cc — see wire_value.h.
#include "wire_value.h"

#include "copy_check.h"

#include <optional>
#include <vector>

namespace ivm::wire {

namespace {
constexpr uint32_t kMaxBigIntWords = 1u << 20;
constexpr uint32_t kMaxAttachments = 1u << 20;

const char* AttachmentName(uint32_t kind) {
  switch (kind) {
    case IVM_ATTACHMENT_COPY: return "an ExternalCopy";
    case IVM_ATTACHMENT_REFERENCE: return "a Reference";
    case IVM_ATTACHMENT_CALLBACK: return "a host callback";
    default: return "an unknown attachment";
  }
}

// Large data (a buffer, a string, a copy's stream) as a memfd beside the
// frame: `tag`, u32 index among the frame's descriptors, u64 length; false:
// the caller inlines it.
bool WriteFd(Writer& w, uint8_t tag, const void* data, size_t size, ObjectCodec* codec) {
  if (codec == nullptr || codec->inline_buffers || size < kFdBufferThreshold ||
      size > kMaxFdBuffer ||
      codec->out_fds.size() >= kMaxFds) {
    return false;
  }
  std::shared_ptr<Fd> fd = BufferFd(data, size);
  if (!fd) return false;
  w.U8(tag).U32(static_cast<uint32_t>(codec->out_fds.size())).U64(size);
  codec->out_fds.push_back(std::move(fd));
  w.SetFdCount(static_cast<uint32_t>(codec->out_fds.size()));
  return true;
}

// What WriteFd sent (after its tag): descriptor `index` of the frame being
// read, each used once, mapped (unmap with UnmapBuffer); null if malformed.
void* MapFd(Reader& r, ObjectCodec* codec, uint64_t* size) {
  uint32_t index = 0;
  if (codec == nullptr || codec->in_fds == nullptr || !r.U32(&index) || !r.U64(size) ||
      index >= codec->in_fds->size()) {
    return nullptr;
  }
  codec->in_used.resize(codec->in_fds->size());
  if (codec->in_used[index]) return nullptr;
  codec->in_used[index] = true;
  return MapSealedBuffer(*(*codec->in_fds)[index], *size, codec->seal_received);
}

// A mapping of MapFd, unmapped at the end of the scope.
struct Mapped {
  uint64_t size = 0;   // (before data, which MapFd sets it with)
  void* data = nullptr;
  Mapped(Reader& r, ObjectCodec* codec) : data(MapFd(r, codec, &size)) {}
  ~Mapped() {
    if (data != nullptr) UnmapBuffer(data, size);
  }
  std::string_view view() const { return {static_cast<const char*>(data), size}; }
};

// A buffer in a descriptor of the frame being read, appended to `value`.
bool ReadFdBuffer(Reader& r, ivm_value_t* value, ObjectCodec* codec) {
  uint64_t size = 0;
  void* data = MapFd(r, codec, &size);
  if (data == nullptr) return false;
  if (codec->AdoptMapping(value, data, size)) return true;
  size_t at = 0;
  ivm_error_t* err = ivm_value_attach_buffer(value, data, static_cast<size_t>(size), 0, &at);
  UnmapBuffer(data, size);
  ivm_error_free(err);
  return err == nullptr;
}

// A Reference, ExternalCopy or host callback attachment, appended to `value`.
bool ReadOtherAttachment(Reader& r, uint8_t kind, ivm_value_t* value, ObjectCodec* codec) {
  if (kind == IVM_ATTACHMENT_CALLBACK) return codec->ReadCallback(r, value);   // rcb
  if (kind == IVM_ATTACHMENT_REFERENCE || kind == IVM_ATTACHMENT_COPY) {
    return codec->ReadAttachment(r, kind, value);
  }
  return false;
}

bool WriteSerialized(Writer& w, const ivm_value_t* value, std::string* why,
                     ObjectCodec* codec) {
  const char* stream;
  size_t len;
  ivm_value_serialized(value, &stream, &len);
  size_t n = ivm_value_attachment_count(value);
  for (size_t i = 0; i < n; ++i) {
    uint32_t kind = ivm_value_attachment_kind(value, i);
    bool by_codec = codec != nullptr && (kind == IVM_ATTACHMENT_REFERENCE ||
                                         kind == IVM_ATTACHMENT_COPY ||
                                         kind == IVM_ATTACHMENT_CALLBACK);
    if (kind != IVM_ATTACHMENT_BUFFER && !by_codec) {
      *why = std::string("the copy holds ") + AttachmentName(kind) +
             ", which cannot cross into or out of a worker process";
      return false;
    }
  }
  // A large stream crosses in a memfd (kValueFdSerialized), as large buffers do.
  if (!WriteFd(w, kValueFdSerialized, stream, len, codec)) {
    w.U8(IVM_VALUE_SERIALIZED).Bytes(std::string_view(stream, len));
  }
  w.U32(static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; ++i) {
    uint32_t kind = ivm_value_attachment_kind(value, i);
    if (kind != IVM_ATTACHMENT_BUFFER) {
      w.U8(static_cast<uint8_t>(kind));
      bool ok = kind == IVM_ATTACHMENT_CALLBACK ? codec->WriteCallback(w, value, i, why)
                                                : codec->WriteAttachment(w, value, i, why);
      if (!ok) return false;
      continue;
    }
    const void* data = nullptr;
    size_t size = 0;
    if (ivm_error_t* err = ivm_value_buffer(value, i, &data, &size)) {
      ivm_error_free(err);
      *why = "unreadable buffer attachment";
      return false;
    }
    if (WriteFd(w, kAttachmentFdBuffer, data, size, codec)) continue;
    w.U8(IVM_ATTACHMENT_BUFFER).Bytes(std::string_view(static_cast<const char*>(data), size));
  }
  return true;
}

// A copy (`kind`: IVM_VALUE_SERIALIZED, or kValueFdSerialized for its stream
// in a memfd), after its kind.
bool ReadSerialized(Reader& r, uint8_t kind, ivm_value_t** out, ObjectCodec* codec) {
  std::string_view stream;
  std::optional<Mapped> mapped;
  if (kind == kValueFdSerialized) {
    mapped.emplace(r, codec);
    if (mapped->data == nullptr) return false;
    stream = mapped->view();
  } else if (!r.Bytes(&stream)) {
    return false;
  }
  uint32_t n = 0;
  if (!r.U32(&n) || n > kMaxAttachments) return false;
  // The other process is not trusted: its stream must have the copy format's
  // shape before any decoder (Python's Unpickler included) sees it.
  if (!CheckCopyStream(stream, nullptr)) return false;
  ivm_value_t* value = nullptr;
  if (ivm_error_t* err = ivm_value_new_serialized(stream.data(), stream.size(), &value)) {
    ivm_error_free(err);
    return false;
  }
  for (uint32_t i = 0; i < n; ++i) {
    uint8_t kind = 0;
    std::string_view data;
    size_t index = 0;
    ivm_error_t* err = nullptr;
    if (!r.U8(&kind)) {
      ivm_value_free(value);
      return false;
    }
    if (kind == kAttachmentFdBuffer) {
      if (!ReadFdBuffer(r, value, codec)) {
        ivm_value_free(value);
        return false;
      }
      continue;
    }
    if (kind != IVM_ATTACHMENT_BUFFER) {
      bool ok = codec != nullptr && ReadOtherAttachment(r, kind, value, codec) &&
                ivm_value_attachment_count(value) == i + 1;
      if (!ok) {
        ivm_value_free(value);
        return false;
      }
      continue;
    }
    if (!r.Bytes(&data) ||
        (err = ivm_value_attach_buffer(value, data.data(), data.size(), 0, &index)) != nullptr) {
      ivm_error_free(err);
      ivm_value_free(value);
      return false;
    }
  }
  *out = value;
  return true;
}

}  // namespace

bool ObjectCodec::WriteCallback(Writer&, const ivm_value_t*, size_t, std::string* why) {
  *why = std::string("the copy holds ") + AttachmentName(IVM_ATTACHMENT_CALLBACK) +
         ", which cannot cross into or out of a worker process";
  return false;
}

bool WriteValue(Writer& w, const ivm_value_t* value, std::string* why, ObjectCodec* codec) {
  ivm_value_kind_t kind = ivm_value_kind(value);
  switch (kind) {
    case IVM_VALUE_UNDEFINED:
    case IVM_VALUE_NULL:
      w.U8(static_cast<uint8_t>(kind));
      return true;
    case IVM_VALUE_BOOLEAN:
      w.U8(static_cast<uint8_t>(kind)).U8(ivm_value_boolean(value) ? 1 : 0);
      return true;
    case IVM_VALUE_NUMBER:
      w.U8(static_cast<uint8_t>(kind)).F64(ivm_value_number(value));
      return true;
    case IVM_VALUE_STRING: {
      const char* p;
      size_t n;
      ivm_value_string(value, &p, &n);
      if (!WriteFd(w, kValueFdString, p, n, codec)) {   // a large one in a memfd
        w.U8(static_cast<uint8_t>(kind)).Bytes(std::string_view(p, n));
      }
      return true;
    }
    case IVM_VALUE_BIGINT: {
      int negative = 0;
      const uint64_t* words = nullptr;
      size_t count = 0;
      ivm_value_bigint(value, &negative, &words, &count);
      w.U8(static_cast<uint8_t>(kind)).U8(negative ? 1 : 0).U32(static_cast<uint32_t>(count));
      for (size_t i = 0; i < count; ++i) w.U64(words[i]);
      return true;
    }
    case IVM_VALUE_SERIALIZED:
      return WriteSerialized(w, value, why, codec);
    case IVM_VALUE_EXTERNAL_COPY:
    case IVM_VALUE_REFERENCE:
      if (codec != nullptr) {
        w.U8(static_cast<uint8_t>(kind));
        return codec->WriteObject(w, value, why);
      }
      break;
    default:
      break;
  }
  switch (kind) {
    case IVM_VALUE_EXTERNAL_COPY:
      *why = "an ExternalCopy cannot cross into or out of a worker process";
      return false;
    case IVM_VALUE_REFERENCE:
      *why = "a Reference cannot cross into or out of a worker process";
      return false;
    default:
      *why = "a value of unknown kind " + std::to_string(kind);
      return false;
  }
}

bool ReadValue(Reader& r, ivm_value_t** out, ObjectCodec* codec) {
  uint8_t kind = 0;
  if (!r.U8(&kind)) return false;
  ivm_value_t* v = nullptr;
  switch (kind) {
    case IVM_VALUE_UNDEFINED: v = ivm_value_new_undefined(); break;
    case IVM_VALUE_NULL: v = ivm_value_new_null(); break;
    case IVM_VALUE_BOOLEAN: {
      uint8_t b = 0;
      if (!r.U8(&b) || b > 1) return false;
      v = ivm_value_new_boolean(b);
      break;
    }
    case IVM_VALUE_NUMBER: {
      double d = 0;
      if (!r.F64(&d)) return false;
      v = ivm_value_new_number(d);
      break;
    }
    case IVM_VALUE_STRING: {
      std::string_view s;
      if (!r.Bytes(&s)) return false;
      v = ivm_value_new_string(s.data(), s.size());
      break;
    }
    case IVM_VALUE_BIGINT: {
      uint8_t negative = 0;
      uint32_t count = 0;
      if (!r.U8(&negative) || negative > 1 || !r.U32(&count) || count > kMaxBigIntWords) {
        return false;
      }
      std::vector<uint64_t> words(count);
      for (auto& word : words) {
        if (!r.U64(&word)) return false;
      }
      v = ivm_value_new_bigint(negative, words.data(), words.size());
      break;
    }
    case kValueFdString: {
      Mapped mapped(r, codec);
      if (mapped.data == nullptr) return false;
      v = ivm_value_new_string(mapped.view().data(), mapped.view().size());
      break;
    }
    case IVM_VALUE_SERIALIZED:
    case kValueFdSerialized:
      return ReadSerialized(r, kind, out, codec);
    case IVM_VALUE_EXTERNAL_COPY:
    case IVM_VALUE_REFERENCE:
      return codec != nullptr && codec->ReadObject(r, kind, out);
    default:
      return false;
  }
  if (v == nullptr) return false;
  *out = v;
  return true;
}

void WriteSource(Writer& w, const WireSource& s) {
  w.U8(s.has_filename ? 1 : 0)
      .Bytes(s.filename)
      .U32(static_cast<uint32_t>(s.line_offset))
      .U32(static_cast<uint32_t>(s.column_offset));
}

bool ReadSource(Reader& r, WireSource* out) {
  uint8_t has = 0;
  std::string_view name;
  uint32_t line = 0, column = 0;
  if (!r.U8(&has) || has > 1 || !r.Bytes(&name) || !r.U32(&line) || !r.U32(&column)) {
    return false;
  }
  out->has_filename = has != 0;
  out->filename.assign(name);
  out->line_offset = static_cast<int32_t>(line);
  out->column_offset = static_cast<int32_t>(column);
  return true;
}

void ToSourceOptions(const WireSource& s, ivm_source_options_t* o) {
  o->filename = s.has_filename ? s.filename.data() : nullptr;
  o->filename_len = s.filename.size();
  o->line_offset = s.line_offset;
  o->column_offset = s.column_offset;
}

}  // namespace ivm::wire
