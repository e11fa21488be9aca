// external_copy.cc — ExternalCopy handles and the C ABI of structured values.
#include "copy.h"

#include <cstring>

namespace ivm {
namespace {

ivm_error_t* Released() { return MakeError(IVM_ERROR_DISPOSED, "ExternalCopy has been released"); }

std::shared_ptr<CopyData> DataOf(ivm_external_copy_t* copy) {
  std::lock_guard<std::mutex> lock(copy->mutex);
  return copy->data;
}

// The copy's data for a new handle or marker; null if released or moved.
ivm_error_t* LiveData(ivm_external_copy_t* copy, std::shared_ptr<CopyData>* out) {
  *out = DataOf(copy);
  if (!*out) return Released();
  if ((*out)->consumed()) return Released();
  return nullptr;
}

}  // namespace
}  // namespace ivm

using ivm::Guard;
using ivm::InvalidArgument;

extern "C" {

IVM_API void ivm_value_serialized(const ivm_value_t* value, const char** out, size_t* out_len) {
  static const char empty[] = "";
  bool ok = ivm::IsSerialized(value);
  if (out) *out = ok ? value->serialized->stream.data() : empty;
  if (out_len) *out_len = ok ? value->serialized->stream.size() : 0;
}

IVM_API size_t ivm_value_attachment_count(const ivm_value_t* value) {
  bool ok = ivm::IsSerialized(value);
  return ok ? value->serialized->attachments.size() : 0;
}

IVM_API ivm_error_t* ivm_value_buffer(const ivm_value_t* value, size_t index,
                                      const void** data_out, size_t* len_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = ivm::CheckSerialized(value)) return err;
    const auto& atts = value->serialized->attachments;
    if (index >= atts.size() || atts[index].kind == ivm::Attachment::kCopy) {
      return InvalidArgument("no buffer attachment " + std::to_string(index));
    }
    if (data_out) *data_out = atts[index].Data();
    if (len_out) *len_out = atts[index].ByteLength();
    return nullptr;
  });
}

IVM_API uint32_t ivm_value_attachment_kind(const ivm_value_t* value, size_t index) {
  if (!ivm::IsSerialized(value)) return 0;
  const auto& atts = value->serialized->attachments;
  if (index >= atts.size()) return 0;
  switch (atts[index].kind) {
    case ivm::Attachment::kBuffer:
    case ivm::Attachment::kSharedBuffer:
    case ivm::Attachment::kBorrowed: return IVM_ATTACHMENT_BUFFER;
    case ivm::Attachment::kCopy: return IVM_ATTACHMENT_COPY;
    case ivm::Attachment::kReference: return IVM_ATTACHMENT_REFERENCE;
    case ivm::Attachment::kCallback: return IVM_ATTACHMENT_CALLBACK;
  }
  return 0;
}

IVM_API ivm_error_t* ivm_value_attachment_copy(const ivm_value_t* value, size_t index,
                                               ivm_external_copy_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (out == nullptr || ivm_value_attachment_kind(value, index) != IVM_ATTACHMENT_COPY) {
      return InvalidArgument("no ExternalCopy attachment " + std::to_string(index));
    }
    auto handle = std::make_unique<ivm_external_copy>();
    handle->data = value->serialized->attachments[index].copy;
    *out = handle.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_value_new_serialized(const char* stream, size_t len, ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (out == nullptr || (stream == nullptr && len != 0)) {
      return InvalidArgument("stream or out is NULL");
    }
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_SERIALIZED;
    v->serialized = std::make_shared<ivm::Serialized>();
    ivm::ReserveStream(v->serialized->stream, len);   // a kept buffer for a large one
    v->serialized->stream.assign(stream ? stream : "", len);
    *out = v.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_value_attach_buffer(ivm_value_t* value, const void* data, size_t len,
                                             uint32_t flags, size_t* index_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = ivm::CheckSerialized(value)) return err;
    if (data == nullptr && len != 0) return InvalidArgument("data is NULL");
    ivm::Attachment a;
    if (flags & IVM_ATTACH_BORROW) {
      a.kind = ivm::Attachment::kBorrowed;
      a.data = data;
      a.length = len;
    } else {
      if (!ivm::Attachment::CopyOf(data, len, &a)) {
        return ivm::MakeError(IVM_ERROR_INTERNAL, "out of memory");
      }
    }
    ivm::AppendAttachment(value, std::move(a), index_out);
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_value_attach_copy(ivm_value_t* value, ivm_external_copy_t* copy,
                                           uint32_t flags, size_t* index_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = ivm::CheckSerialized(value)) return err;
    if (copy == nullptr) return InvalidArgument("copy is NULL");
    ivm::Attachment a;
    a.kind = ivm::Attachment::kCopy;
    if (ivm_error_t* err = ivm::LiveData(copy, &a.copy)) return err;
    a.flags = flags;
    if ((flags & (IVM_COPY_INTO_RELEASE | IVM_COPY_INTO_TRANSFER_IN)) && !(flags & IVM_COPY_AS_OBJECT)) {
      ivm_external_copy_release(copy);
    }
    ivm::AppendAttachment(value, std::move(a), index_out);
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_value_attach_marker(ivm_value_t* value, const ivm_value_t* marker,
                                             size_t* index_out) {
  return Guard([&]() -> ivm_error_t* {
    if (ivm_error_t* err = ivm::CheckSerialized(value)) return err;
    if (!ivm::IsSerialized(marker) || marker->serialized->attachments.size() != 1 ||
        (marker->serialized->attachments[0].kind != ivm::Attachment::kCopy &&
         marker->serialized->attachments[0].kind != ivm::Attachment::kReference &&
         marker->serialized->attachments[0].kind != ivm::Attachment::kCallback)) {
      return InvalidArgument("not a marker value");
    }
    ivm::AppendAttachment(value, marker->serialized->attachments[0], index_out);
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_external_copy_copy_into(ivm_external_copy_t* copy, uint32_t flags,
                                                 ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (copy == nullptr || out == nullptr) return InvalidArgument("copy or out is NULL");
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_SERIALIZED;
    v->serialized = std::make_shared<ivm::Serialized>();
    v->serialized->stream.assign(ivm::kAttachmentStream, ivm::kAttachmentStreamLength);
    if (ivm_error_t* err = ivm_value_attach_copy(v.get(), copy, flags, nullptr)) return err;
    *out = v.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_external_copy_new(const ivm_value_t* value, uint32_t flags,
                                           ivm_external_copy_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (value == nullptr || out == nullptr) return InvalidArgument("value or out is NULL");
    if (flags != 0) return InvalidArgument("flags must be 0");
    ivm::Serialized s;
    switch (value->kind) {
      case IVM_VALUE_SERIALIZED:
        if (!value->serialized) return InvalidArgument("empty serialized value");
        s = *value->serialized;
        for (ivm::Attachment& a : s.attachments) {
          if (a.kind == ivm::Attachment::kBorrowed) {
            ivm::Attachment owned;
            if (!ivm::Attachment::CopyOf(a.data, a.length, &owned)) {
              return ivm::MakeError(IVM_ERROR_INTERNAL, "out of memory");
            }
            a = std::move(owned);
          }
        }
        break;
      case IVM_VALUE_EXTERNAL_COPY:
        if (!value->copy) return InvalidArgument("empty external copy value");
        s = value->copy->value();
        break;
      default:
        if (ivm_error_t* err = ivm::PrimitiveStream(value, &s.stream)) return err;
        break;
    }
    auto handle = std::make_unique<ivm_external_copy>();
    handle->data = std::make_shared<ivm::CopyData>(std::move(s));
    *out = handle.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_value_external_copy(const ivm_value_t* value,
                                             ivm_external_copy_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (value == nullptr || out == nullptr) return InvalidArgument("value or out is NULL");
    if (value->kind != IVM_VALUE_EXTERNAL_COPY || !value->copy) {
      return InvalidArgument("not an external copy value");
    }
    auto handle = std::make_unique<ivm_external_copy>();
    handle->data = value->copy;
    *out = handle.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_external_copy_read(ivm_external_copy_t* copy, ivm_value_t** out) {
  return Guard([&]() -> ivm_error_t* {
    if (copy == nullptr || out == nullptr) return InvalidArgument("copy or out is NULL");
    std::shared_ptr<ivm::CopyData> data;
    if (ivm_error_t* err = ivm::LiveData(copy, &data)) return err;
    auto v = std::make_unique<ivm_value>();
    v->kind = IVM_VALUE_SERIALIZED;
    v->serialized = std::make_shared<ivm::Serialized>(data->value());
    *out = v.release();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_external_copy_size(ivm_external_copy_t* copy, uint64_t* size_out,
                                            uint64_t* byte_length_out) {
  return Guard([&]() -> ivm_error_t* {
    if (copy == nullptr) return InvalidArgument("copy is NULL");
    std::shared_ptr<ivm::CopyData> data;
    if (ivm_error_t* err = ivm::LiveData(copy, &data)) return err;
    if (size_out) *size_out = data->size();
    if (byte_length_out) *byte_length_out = data->byte_length();
    return nullptr;
  });
}

IVM_API ivm_error_t* ivm_external_copy_release(ivm_external_copy_t* copy) {
  return Guard([&]() -> ivm_error_t* {
    if (copy == nullptr) return InvalidArgument("copy is NULL");
    std::shared_ptr<ivm::CopyData> dropped;
    {
      std::lock_guard<std::mutex> lock(copy->mutex);
      dropped.swap(copy->data);
    }
    return nullptr;   // `dropped` frees the data outside the lock
  });
}

IVM_API void ivm_external_copy_free(ivm_external_copy_t* copy) { ivm::FreeHandle(copy); }

IVM_API uint64_t ivm_external_copy_total_size(void) { return ivm::CopyTotalSize(); }

IVM_API uint64_t ivm_set_copy_limit(uint64_t bytes) { return ivm::SetCopyLimit(bytes); }

}  // extern "C"
