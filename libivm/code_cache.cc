// code_cache.cc — ivm's header around V8 code caches (code_cache.h).
//
// Layout, little-endian, 56 bytes then the payload:
//   u32 magic 'IVMC'   u32 format (1)      u32 ivm version   u32 V8 tag
//   u32 kind           u32 reserved (0)    u64 source length u64 source hash
//   u64 payload length u64 payload checksum
// The V8 tag is ScriptCompiler::CachedDataVersionTag(): V8's version and the
// flags that affect code. The hashes guard against accidents (another
// source, a truncated file), not against an attacker: cache data must never
// come from untrusted users.
#include "code_cache.h"

#include <cstring>

namespace ivm::cache {
namespace {

constexpr uint32_t kMagic = 0x434d5649u;   // "IVMC"
constexpr uint32_t kFormat = 1;
constexpr size_t kHeaderBytes = 56;

}  // namespace

uint64_t Hash(std::string_view bytes) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ bytes.size();
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  h = (h ^ tail) * 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}

void Put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void Put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t Get(std::string_view blob, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(blob[at + static_cast<size_t>(i)])) << (8 * i);
  }
  return v;
}

ivm_error_t* ReadOptions(const ivm_cache_options_t* opts, Options* out) {
  ivm_cache_options_t full = IVM_CACHE_OPTIONS_INIT;
  if (ivm_error_t* err = ReadStruct(opts, &full)) return err;
  if (full.data == nullptr && full.data_len != 0) return InvalidArgument("cache data is NULL");
  if ((full.flags & ~static_cast<uint32_t>(IVM_CACHE_PRODUCE)) != 0) {
    return InvalidArgument("unknown cache flags");
  }
  out->data = std::string_view(full.data ? full.data : "", full.data_len);
  out->given = full.data != nullptr;
  out->produce = (full.flags & IVM_CACHE_PRODUCE) != 0;
  return nullptr;
}

ivm_error_t* ReadCompileInput(const char* code, size_t code_len,
                              const ivm_source_options_t* source,
                              const ivm_cache_options_t* cache, CompileInput* out) {
  if (code == nullptr && code_len != 0) return InvalidArgument("code is NULL");
  out->code = std::string_view(code ? code : "", code_len);
  if (ivm_error_t* err = ReadSourceOptions(source, &out->source)) return err;
  return ReadOptions(cache, &out->cache);
}

std::string Wrap(Kind kind, std::string_view source, const uint8_t* payload, size_t len) {
  std::string out;
  out.reserve(kHeaderBytes + len);
  std::string_view body(reinterpret_cast<const char*>(payload), len);
  Put32(out, kMagic);
  Put32(out, kFormat);
  Put32(out, ivm_version());
  Put32(out, v8::ScriptCompiler::CachedDataVersionTag());
  Put32(out, kind);
  Put32(out, 0);
  Put64(out, source.size());
  Put64(out, Hash(source));
  Put64(out, len);
  Put64(out, Hash(body));
  out.append(body);
  return out;
}

bool Unwrap(Kind kind, std::string_view source, std::string_view blob, std::string_view* payload) {
  if (blob.size() < kHeaderBytes) return false;
  if (Get(blob, 0, 4) != kMagic || Get(blob, 4, 4) != kFormat || Get(blob, 8, 4) != ivm_version() ||
      Get(blob, 12, 4) != v8::ScriptCompiler::CachedDataVersionTag() || Get(blob, 16, 4) != kind ||
      Get(blob, 20, 4) != 0) {
    return false;
  }
  if (Get(blob, 24, 8) != source.size() || Get(blob, 32, 8) != Hash(source)) return false;
  std::string_view body = blob.substr(kHeaderBytes);
  if (Get(blob, 40, 8) != body.size() || Get(blob, 48, 8) != Hash(body)) return false;
  if (body.empty() || body.size() > static_cast<size_t>(INT32_MAX)) return false;
  *payload = body;
  return true;
}

v8::ScriptCompiler::CachedData* Consume(Kind kind, std::string_view source, const Options& options,
                                        Outcome* outcome,
                                        v8::ScriptCompiler::CompileOptions* compile) {
  *compile = v8::ScriptCompiler::kNoCompileOptions;
  if (!options.given) return nullptr;
  std::string_view payload;
  if (!Unwrap(kind, source, options.data, &payload)) {
    outcome->rejected = true;
    return nullptr;
  }
  *compile = v8::ScriptCompiler::kConsumeCodeCache;
  return new v8::ScriptCompiler::CachedData(reinterpret_cast<const uint8_t*>(payload.data()),
                                            static_cast<int>(payload.size()),
                                            v8::ScriptCompiler::CachedData::BufferNotOwned);
}

}  // namespace ivm::cache
