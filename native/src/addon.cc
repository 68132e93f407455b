// typelens CUDA addon: device buffers owned here, addressed from JS by integer handles, and the
// kernels of kernels.cu. Every CUDA failure becomes a JS Error naming the call and CUDA's reason.
#include <napi.h>
#include <cuda_runtime.h>
#include <string>
#include <unordered_map>
#include <utility>

extern "C" {
cudaError_t tl_sgemm(const float* A, const float* B, float* C, int M, int K, int N);
cudaError_t tl_layernorm(const float* x, float* out, float* scale, const float* w, const float* b, int rows, int d, float eps);
cudaError_t tl_attention(const float* q, const float* k, const float* v, float* pattern, float* z, int B, int P, int H, int D, float inv_scale);
cudaError_t tl_gelu(const float* x, float* out, size_t n);
cudaError_t tl_add_bias(float* x, const float* bias, size_t rows, int n);
cudaError_t tl_add(const float* a, const float* b, float* out, size_t n);
}

namespace {

struct Buf { float* ptr; size_t n; };
std::unordered_map<uint32_t, Buf> buffers;
uint32_t next_id = 1;

void check(Napi::Env env, cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Napi::Error::New(env, std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

Buf& buf(const Napi::CallbackInfo& info, size_t i, size_t need) {
  uint32_t id = info[i].As<Napi::Number>().Uint32Value();
  auto it = buffers.find(id);
  if (it == buffers.end()) throw Napi::Error::New(info.Env(), "unknown or freed device buffer " + std::to_string(id));
  if (it->second.n < need) throw Napi::Error::New(info.Env(), "device buffer " + std::to_string(id) + " holds " + std::to_string(it->second.n) + " floats, " + std::to_string(need) + " needed");
  return it->second;
}
int num(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }

Napi::Value DeviceCount(const Napi::CallbackInfo& info) {
  int n = 0;
  // no driver or no device: report 0 rather than fail, so "auto" can fall back quietly
  if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); n = 0; }
  return Napi::Number::New(info.Env(), n);
}

Napi::Value DeviceName(const Napi::CallbackInfo& info) {
  cudaDeviceProp p;
  check(info.Env(), cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
  return Napi::String::New(info.Env(), p.name);
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  size_t n = (size_t)info[0].As<Napi::Number>().Int64Value();
  float* p = nullptr;
  check(info.Env(), cudaMalloc(&p, (n ? n : 1) * sizeof(float)), "cudaMalloc");
  uint32_t id = next_id++;
  buffers[id] = {p, n};
  return Napi::Number::New(info.Env(), id);
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  auto it = buffers.find(id);
  if (it != buffers.end()) { cudaFree(it->second.ptr); buffers.erase(it); }
  return info.Env().Undefined();
}

Napi::Value Upload(const Napi::CallbackInfo& info) {
  auto a = info[1].As<Napi::Float32Array>();
  Buf& b = buf(info, 0, a.ElementLength());
  check(info.Env(), cudaMemcpy(b.ptr, a.Data(), a.ElementLength() * sizeof(float), cudaMemcpyHostToDevice), "upload");
  return info.Env().Undefined();
}

Napi::Value Download(const Napi::CallbackInfo& info) {
  auto a = info[1].As<Napi::Float32Array>();
  Buf& b = buf(info, 0, a.ElementLength());
  check(info.Env(), cudaMemcpy(a.Data(), b.ptr, a.ElementLength() * sizeof(float), cudaMemcpyDeviceToHost), "download");
  return info.Env().Undefined();
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  int M = num(info, 3), K = num(info, 4), N = num(info, 5);
  Buf& a = buf(info, 0, (size_t)M * K); Buf& b = buf(info, 1, (size_t)K * N); Buf& c = buf(info, 2, (size_t)M * N);
  check(info.Env(), tl_sgemm(a.ptr, b.ptr, c.ptr, M, K, N), "matmul");
  return info.Env().Undefined();
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  int rows = num(info, 5), d = num(info, 6);
  float eps = info[7].As<Napi::Number>().FloatValue();
  Buf& x = buf(info, 0, (size_t)rows * d); Buf& out = buf(info, 1, (size_t)rows * d); Buf& s = buf(info, 2, rows);
  const float* w = info[3].IsNull() ? nullptr : buf(info, 3, d).ptr;
  const float* bb = info[4].IsNull() ? nullptr : buf(info, 4, d).ptr;
  check(info.Env(), tl_layernorm(x.ptr, out.ptr, s.ptr, w, bb, rows, d, eps), "layerNorm");
  return info.Env().Undefined();
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  int B = num(info, 5), P = num(info, 6), H = num(info, 7), D = num(info, 8);
  float inv = info[9].As<Napi::Number>().FloatValue();
  size_t n = (size_t)B * P * H * D;
  Buf& q = buf(info, 0, n); Buf& k = buf(info, 1, n); Buf& v = buf(info, 2, n);
  Buf& pat = buf(info, 3, (size_t)B * H * P * P); Buf& z = buf(info, 4, n);
  check(info.Env(), tl_attention(q.ptr, k.ptr, v.ptr, pat.ptr, z.ptr, B, P, H, D, inv), "attention");
  return info.Env().Undefined();
}

Napi::Value Gelu(const Napi::CallbackInfo& info) {
  size_t n = (size_t)info[2].As<Napi::Number>().Int64Value();
  Buf& x = buf(info, 0, n); Buf& out = buf(info, 1, n);
  check(info.Env(), tl_gelu(x.ptr, out.ptr, n), "gelu");
  return info.Env().Undefined();
}

Napi::Value AddBias(const Napi::CallbackInfo& info) {
  size_t rows = (size_t)info[2].As<Napi::Number>().Int64Value();
  int n = num(info, 3);
  Buf& x = buf(info, 0, rows * n); Buf& b = buf(info, 1, n);
  check(info.Env(), tl_add_bias(x.ptr, b.ptr, rows, n), "addBias");
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  size_t n = (size_t)info[3].As<Napi::Number>().Int64Value();
  Buf& a = buf(info, 0, n); Buf& b = buf(info, 1, n); Buf& out = buf(info, 2, n);
  check(info.Env(), tl_add(a.ptr, b.ptr, out.ptr, n), "add");
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  check(info.Env(), cudaDeviceSynchronize(), "synchronize");
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  using Fn = Napi::Value (*)(const Napi::CallbackInfo&);
  const std::pair<const char*, Fn> fns[] = {
    {"deviceCount", DeviceCount}, {"deviceName", DeviceName}, {"alloc", Alloc}, {"free", Free},
    {"upload", Upload}, {"download", Download}, {"matmul", Matmul}, {"layerNorm", LayerNorm},
    {"attention", Attention}, {"gelu", Gelu}, {"addBias", AddBias}, {"add", Add}, {"synchronize", Synchronize},
  };
  for (const auto& [name, fn] : fns) exports.Set(name, Napi::Function::New(env, fn));
  return exports;
}

}  // namespace

NODE_API_MODULE(typelens_cuda, Init)
