// c_breakdown.cc — libivm's fixed cost per synchronous call, step by step, timed from C++.
//
// Linked with libivm's objects (not through ivm.h alone), so it can time the steps one
// call goes through: the lock, the scopes, the call state (IsolateHolder::Begin/End),
// the compile-cache lookup of an eval, the end of the call (tasks and microtasks, the
// external-memory check) and the result's conversion, beside raw V8 running a bound
// script and the whole ABI calls; and the 64 MiB move of bench/run.py through the ABI
// (move_64mb_abi). Every figure is a loop of its own step (the move: 7 moves), timed on the
// wall clock; every loop checks what it produced. Output: one `name microseconds` line
// per step (bench/run.py --figures reads it as c_breakdown_<name>_us).
//
//   ivm_bench_breakdown [iterations]     (built with `meson compile ivm_bench_breakdown`)
#include "context.h"
#include "copy.h"
#include "internal.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

size_t g_iterations = 200000;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "c_breakdown: %s\n", what);
  std::exit(1);
}

void Check(ivm_error_t* err, const char* what) {
  if (err == nullptr) return;
  const char* msg = nullptr;
  size_t len = 0;
  ivm_error_message(err, &msg, &len);
  std::fprintf(stderr, "c_breakdown: %s: %.*s\n", what, static_cast<int>(len), msg);
  std::exit(1);
}

// Times `step` over g_iterations runs (the best of three rounds, in microseconds per run).
template <class F>
double Time(F&& step) {
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < g_iterations; ++i) step();
    std::chrono::duration<double, std::micro> spent = std::chrono::steady_clock::now() - start;
    best = std::min(best, spent.count() / static_cast<double>(g_iterations));
  }
  return best;
}

void Report(const char* name, double us) { std::printf("%s %.4f\n", name, us); }

// A number result from the primitive slot, checked.
void ExpectTwo(ivm_value_t* out, const ivm_primitive_t& slot, const char* what) {
  if (out != nullptr || slot.kind != IVM_VALUE_NUMBER || slot.number != 2.0) Fail(what);
}

// A `true` result from the primitive slot, checked.
void ExpectTrue(ivm_value_t* out, const ivm_primitive_t& slot, const char* what) {
  if (out != nullptr || slot.kind != IVM_VALUE_BOOLEAN || slot.boolean != 1) Fail(what);
}

struct Fixture {
  ivm_isolate_t* iso = nullptr;
  ivm_context_t* ctx = nullptr;
  ivm_script_t* script = nullptr;
  ivm_reference_t* fn = nullptr;
};

Fixture Open() {
  Fixture f;
  Check(ivm_isolate_new(nullptr, &f.iso), "isolate");
  Check(ivm_isolate_create_context(f.iso, nullptr, &f.ctx), "context");
  Check(ivm_isolate_compile_script(f.iso, "1+1", 3, nullptr, nullptr, &f.script), "compile");
  ivm_result_options_t ref = IVM_RESULT_OPTIONS_INIT;
  ref.flags = IVM_RESULT_REFERENCE;
  ivm_value_t* value = nullptr;
  const char* code = "(function one() { return 2; })";
  Check(ivm_context_eval(f.ctx, code, std::strlen(code), nullptr, nullptr, &ref, &value, nullptr),
        "function");
  Check(ivm_value_reference(value, &f.fn), "reference");
  ivm_value_free(value);
  return f;
}

void Close(Fixture& f) {
  ivm_reference_free(f.fn);
  ivm_script_free(f.script);
  ivm_context_free(f.ctx);
  ivm_isolate_free(f.iso);
}

// The whole calls, through the ABI (as the Python wrapper makes them).
void AbiCalls(Fixture& f) {
  ivm_primitive_t slot;
  ivm_value_t* out = nullptr;
  Report("abi_eval", Time([&] {
    Check(ivm_context_eval(f.ctx, "1+1", 3, nullptr, nullptr, nullptr, &out, &slot), "eval");
    ExpectTwo(out, slot, "eval result");
  }));
  Report("abi_script_run", Time([&] {
    Check(ivm_script_run(f.script, f.ctx, nullptr, nullptr, &out, &slot), "run");
    ExpectTwo(out, slot, "run result");
  }));
  Report("abi_apply", Time([&] {
    Check(ivm_reference_apply(f.fn, nullptr, nullptr, 0, nullptr, nullptr, &out, &slot), "apply");
    ExpectTwo(out, slot, "apply result");
  }));
}

// Raw V8: a bound script run in an isolate already locked and entered (the floor).
void RawV8(ivm::IsolateHolder& holder, ivm::ContextRecord& record) {
  ivm::ThreadLockScope lock(holder);
  v8::Isolate* isolate = holder.isolate();
  v8::Isolate::Scope isolate_scope(isolate);
  v8::HandleScope outer(isolate);
  v8::Local<v8::Context> context = record.context.Get(isolate);
  v8::Context::Scope context_scope(context);
  v8::Local<v8::String> source = v8::String::NewFromUtf8Literal(isolate, "1+1");
  v8::Global<v8::Script> script(isolate, v8::Script::Compile(context, source).ToLocalChecked());
  Report("raw_v8_bound_run", Time([&] {
    v8::HandleScope scope(isolate);
    v8::Local<v8::Value> v;
    if (!script.Get(isolate)->Run(context).ToLocal(&v) || v.As<v8::Number>()->Value() != 2.0) {
      Fail("raw run");
    }
  }));
}

// The lock: the isolate's call mutex and this thread's V8 lock (a parked Locker).
void LockSteps(ivm::IsolateHolder& holder) {
  Report("lock_mutex", Time([&] {
    std::unique_lock<std::recursive_timed_mutex> lock(holder.exec_mutex(), std::try_to_lock);
    if (!lock.owns_lock()) Fail("mutex busy");
  }));
  Report("lock_v8_thread", Time([&] {
    std::unique_lock<std::recursive_timed_mutex> lock(holder.exec_mutex());
    ivm::ThreadLockScope thread_lock(holder);
  }));
}

// The scopes every call opens, with the isolate locked.
void ScopeSteps(ivm::IsolateHolder& holder, ivm::ContextRecord& record) {
  std::unique_lock<std::recursive_timed_mutex> lock(holder.exec_mutex());
  ivm::ThreadLockScope thread_lock(holder);
  v8::Isolate* isolate = holder.isolate();
  Report("scopes", Time([&] {
    v8::Isolate::Scope isolate_scope(isolate);
    v8::HandleScope handle_scope(isolate);
    v8::Local<v8::Context> context = record.context.Get(isolate);
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
  }));
}

// IsolateHolder::Run around an empty body (checks, lock, scopes, call state), beside
// IsolateHolder::Locked (the same without the call state), and the clocks Begin/End read.
// Steps whose cost depends on the call being short (CheckExternalMemory reads the heap's
// figures in a long call) are timed in short calls: `*_in_call` is Run around that step
// alone, and the step's own figure is that loop minus the empty one (both printed).
void CallStateSteps(ivm::IsolateHolder& holder) {
  Report("holder_locked", Time([&] {
    Check(holder.Locked([](v8::Isolate*) -> ivm_error_t* { return nullptr; }), "locked");
  }));
  double run = Time([&] {
    Check(holder.Run(0, [](v8::Isolate*, ivm::CallState&) -> ivm_error_t* { return nullptr; }),
          "run");
  });
  Report("holder_run", run);
  double check = Time([&] {
    Check(holder.Run(0, [&](v8::Isolate*, ivm::CallState&) -> ivm_error_t* {
      holder.CheckExternalMemory();
      return nullptr;
    }), "run");
  });
  Report("check_external_memory_in_call", check);
  Report("check_external_memory", check - run);
  volatile int64_t sink = 0;
  Report("clock_monotonic", Time([&] { sink = sink + ivm::MonotonicNs(); }));
  // What a call reads twice (its start and end): the TSC where usable (CallClockNs).
  Report("clock_call", Time([&] { sink = sink + ivm::CallClockNs(); }));
  Report("clock_thread_cpu", Time([&] { sink = sink + ivm::ThreadCpuNs(); }));
}

// Inside one call: the eval cache lookup, the end of a call and the result's conversion.
void InCallSteps(ivm::IsolateHolder& holder, ivm::ContextRecord& record) {
  Check(holder.Run(0, [&](v8::Isolate* isolate, ivm::CallState& call) -> ivm_error_t* {
    v8::Local<v8::Context> context = record.context.Get(isolate);
    v8::Context::Scope context_scope(context);
    v8::TryCatch try_catch(isolate);
    ivm::SourceOptions source;
    Report("compile_cache_lookup", Time([&] {
      v8::HandleScope scope(isolate);
      ivm_error_t* err = nullptr;
      if (ivm::CompileEval(isolate, context, record, "1+1", 3, source, &err).IsEmpty()) {
        Fail("cache lookup");
      }
    }));
    Report("settle", Time([&] { holder.Settle(call); }));
    Report("flush_rejections",
           Time([&] { ivm::FlushRejections(holder, isolate, context, call); }));
    v8::Local<v8::Value> two = v8::Number::New(isolate, 2);
    ivm_primitive_t slot;
    Report("result_conversion", Time([&] {
      ivm_value_t* out = nullptr;
      Check(ivm::ResultFromV8(holder, isolate, context, try_catch, call, two, 0, &out), "result");
      ivm::DeliverPrimitive(&slot, &out);
      ExpectTwo(out, slot, "converted result");
    }));
    // What CompleteCall does instead when the ABI call handed it its primitive_out.
    Report("result_to_primitive_out", Time([&] {
      if (!ivm::FillPrimitiveFromV8(two, &slot)) Fail("direct result");
      ExpectTwo(nullptr, slot, "direct result");
    }));
    return nullptr;
  }), "in-call steps");
}

// The 64 MiB move of bench/run.py's transfer_arraybuffer_64mb_ms, through the ABI calls
// the Python wrapper makes (eval with an ExternalCopy result that transfers the buffer out,
// copy_into, a set on the other isolate's global), without Python: the median of 7 moves,
// each timed after 64 MiB were written (as the Python figure and raw V8's are), in
// microseconds. Set beside raw V8's move from the same anchors run, it is libivm's part of
// the Python figure's ratio.
void Move64Mb() {
  ivm_isolate_options_t opts = IVM_ISOLATE_OPTIONS_INIT;
  opts.memory_limit = uint64_t{2048} << 20;   // (bench/run.py's BIG_LIMIT_MB)
  ivm_isolate_t* isos[2] = {nullptr, nullptr};
  ivm_context_t* ctxs[2] = {nullptr, nullptr};
  for (int i = 0; i < 2; ++i) {
    Check(ivm_isolate_new(&opts, &isos[i]), "big isolate");
    Check(ivm_isolate_create_context(isos[i], nullptr, &ctxs[i]), "big context");
  }
  ivm_reference_t* global_b = nullptr;
  Check(ivm_context_global(ctxs[1], &global_b), "global");
  auto eval = [](ivm_context_t* ctx, const char* code, const ivm_result_options_t* result,
                 ivm_value_t** out, ivm_primitive_t* slot) {
    Check(ivm_context_eval(ctx, code, std::strlen(code), nullptr, nullptr, result, out, slot),
          code);
  };
  ivm_result_options_t move_out = IVM_RESULT_OPTIONS_INIT;
  move_out.flags = IVM_RESULT_EXTERNAL_COPY | IVM_RESULT_TRANSFER_OUT;
  std::vector<double> samples;
  ivm_primitive_t slot;
  ivm_value_t* out = nullptr;
  for (int k = 0; k < 7; ++k) {
    eval(ctxs[0], "globalThis.buf = new ArrayBuffer(64 * 1024 * 1024); "
                  "new Uint8Array(buf).fill(7); 0", nullptr, &out, &slot);
    auto start = std::chrono::steady_clock::now();
    ivm_value_t* result = nullptr;
    eval(ctxs[0], "buf", &move_out, &result, nullptr);
    ivm_external_copy_t* copy = nullptr;
    Check(ivm_value_external_copy(result, &copy), "external copy");
    ivm_value_t* marker = nullptr;
    Check(ivm_external_copy_copy_into(copy, IVM_COPY_INTO_RELEASE | IVM_COPY_INTO_TRANSFER_IN,
                                      &marker), "copy_into");
    ivm_value_t* key = ivm_value_new_string("got", 3);
    Check(ivm_reference_set(global_b, key, marker, nullptr, &out, &slot), "set");
    std::chrono::duration<double, std::micro> spent = std::chrono::steady_clock::now() - start;
    samples.push_back(spent.count());
    ExpectTrue(out, slot, "set result");
    ivm_value_free(key);
    ivm_value_free(marker);
    ivm_external_copy_free(copy);
    ivm_value_free(result);
    eval(ctxs[1], "got.byteLength === 67108864 && new Uint8Array(got)[12345] === 7 && "
                  "(delete globalThis.got)", nullptr, &out, &slot);
    ExpectTrue(out, slot, "moved");
    eval(ctxs[0], "buf.byteLength === 0 && (delete globalThis.buf)", nullptr, &out, &slot);
    ExpectTrue(out, slot, "detached");
  }
  std::sort(samples.begin(), samples.end());
  Report("move_64mb_abi", samples[samples.size() / 2]);
  ivm_reference_free(global_b);
  for (int i = 0; i < 2; ++i) {
    ivm_context_free(ctxs[i]);
    Check(ivm_isolate_dispose(isos[i]), "dispose");
    ivm_isolate_free(isos[i]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_iterations = std::strtoull(argv[1], nullptr, 10);
  if (g_iterations == 0) Fail("iterations must be a positive number");
  // As the Python package does on its main thread: Ctrl-C stops the calls it runs.
  Check(ivm_interrupt_on_signal(SIGINT), "interrupt");
  Fixture f = Open();
  ivm::IsolateHolder& holder = *f.ctx->holder;
  ivm::ContextRecord& record = *f.ctx->record;
  RawV8(holder, record);
  LockSteps(holder);
  ScopeSteps(holder, record);
  CallStateSteps(holder);
  InCallSteps(holder, record);
  AbiCalls(f);
  Close(f);
  Move64Mb();
  return 0;
}
