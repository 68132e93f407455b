// typelens CUDA kernels: plain, readable, one idea each (in the spirit of llm.c).
// Row-major f32 everywhere; shapes follow TransformerLens ([B, P, H, D] for q/k/v/z,
// [B, H, P, P] for patterns). Launchers are extern "C" so the N-API addon stays C++-only.
#include <cuda_runtime.h>
#include <math.h>

// ---------------------------------------------------------------------------------------------
// matmul: C[M, N] = A[M, K] @ B[K, N]. 64x64 output tile per block, 16-deep K slices staged in
// shared memory, each of the 256 threads accumulating a 4x4 sub-tile in registers.
#define TM 64
#define TN 64
#define TK 16
__global__ void sgemm_kernel(const float* A, const float* B, float* C, int M, int K, int N) {
  __shared__ float As[TK][TM];
  __shared__ float Bs[TK][TN];
  int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  int row0 = blockIdx.y * TM, col0 = blockIdx.x * TN;
  float acc[4][4] = {{0}};
  for (int k0 = 0; k0 < K; k0 += TK) {
    // 256 threads load 64x16 of A and 16x64 of B (4 values each)
    for (int i = threadIdx.x; i < TM * TK; i += 256) {
      int r = i / TK, c = i % TK;
      int gr = row0 + r, gc = k0 + c;
      As[c][r] = (gr < M && gc < K) ? A[(size_t)gr * K + gc] : 0.f;
    }
    for (int i = threadIdx.x; i < TK * TN; i += 256) {
      int r = i / TN, c = i % TN;
      int gr = k0 + r, gc = col0 + c;
      Bs[r][c] = (gr < K && gc < N) ? B[(size_t)gr * N + gc] : 0.f;
    }
    __syncthreads();
    for (int kk = 0; kk < TK; kk++) {
      float a[4], b[4];
      for (int i = 0; i < 4; i++) a[i] = As[kk][ty * 4 + i];
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx * 4 + j];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; i++) {
    int r = row0 + ty * 4 + i;
    if (r >= M) continue;
    for (int j = 0; j < 4; j++) {
      int c = col0 + tx * 4 + j;
      if (c < N) C[(size_t)r * N + c] = acc[i][j];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Block-wide sum with warp shuffles (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  int nw = blockDim.x / 32;
  v = threadIdx.x < nw ? part[threadIdx.x] : 0.f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
  __shared__ float total;
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

// Layer norm as TL splits it: centre, scale = sqrt(mean(x^2) + eps), divide, then w and b when
// given (null for LNPre). One block per row; scale is written for hook_scale.
__global__ void layernorm_kernel(const float* x, float* out, float* scale, const float* w, const float* b, int d, float eps) {
  const float* xr = x + (size_t)blockIdx.x * d;
  float* yr = out + (size_t)blockIdx.x * d;
  float s = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) s += xr[i];
  float mean = block_sum(s) / d;
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) { float c = xr[i] - mean; ss += c * c; }
  float sc = sqrtf(block_sum(ss) / d + eps);
  if (threadIdx.x == 0) scale[blockIdx.x] = sc;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float v = (xr[i] - mean) / sc;
    if (w) v = v * w[i] + b[i];
    yr[i] = v;
  }
}

// Causal attention for one (batch, head, query) per block: scores over keys j <= i, softmax,
// z = pattern @ v. Writes the pattern (hook_pattern) and z (hook_z).
__global__ void attention_kernel(const float* q, const float* k, const float* v, float* pattern, float* z,
                                 int B, int P, int H, int D, float inv_scale) {
  int i = blockIdx.x % P, h = (blockIdx.x / P) % H, bb = blockIdx.x / (P * H);
  extern __shared__ float sh[];  // P scores (the launch pads them to a multiple of 4)
  const float* qi = q + (((size_t)bb * P + i) * H + h) * D;
  float local_max = -INFINITY;
  for (int j = threadIdx.x; j < P; j += blockDim.x) {
    float s = -INFINITY;
    if (j <= i) {
      const float* kj = k + (((size_t)bb * P + j) * H + h) * D;
      float acc = 0.f;
      for (int d = 0; d < D; d++) acc += qi[d] * kj[d];
      s = acc * inv_scale;
    }
    sh[j] = s;
    local_max = fmaxf(local_max, s);
  }
  // block max via shared reduction on the scores (P is small relative to work per block)
  __syncthreads();
  __shared__ float mx, denom;
  if (threadIdx.x == 0) { float m = -INFINITY; for (int j = 0; j <= i; j++) m = fmaxf(m, sh[j]); mx = m; }
  __syncthreads();
  float part = 0.f;
  for (int j = threadIdx.x; j < P; j += blockDim.x) { float e = j <= i ? expf(sh[j] - mx) : 0.f; sh[j] = e; part += e; }
  float tot = block_sum(part);
  if (threadIdx.x == 0) denom = tot;
  __syncthreads();
  float* pr = pattern + (((size_t)bb * H + h) * P + i) * P;
  for (int j = threadIdx.x; j < P; j += blockDim.x) { sh[j] /= denom; pr[j] = sh[j]; }
  __syncthreads();
  float* zi = z + (((size_t)bb * P + i) * H + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j <= i; j++) acc += sh[j] * v[(((size_t)bb * P + j) * H + h) * D + d];
    zi[d] = acc;
  }
  (void)local_max;
}

// gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
__global__ void gelu_kernel(const float* x, float* out, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) { float v = x[i]; out[i] = 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))); }
}

// x[r, j] += bias[j] for rows of n (the linear layers' biases)
__global__ void add_bias_kernel(float* x, const float* bias, size_t rows, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < rows * n) x[i] += bias[i % n];
}

// out = a + b (residual additions)
__global__ void add_kernel(const float* a, const float* b, float* out, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

extern "C" {
cudaError_t tl_add_bias(float* x, const float* bias, size_t rows, int n) {
  size_t total = rows * n;
  add_bias_kernel<<<(unsigned)((total + 255) / 256), 256>>>(x, bias, rows, n);
  return cudaGetLastError();
}
cudaError_t tl_add(const float* a, const float* b, float* out, size_t n) {
  add_kernel<<<(unsigned)((n + 255) / 256), 256>>>(a, b, out, n);
  return cudaGetLastError();
}
cudaError_t tl_sgemm(const float* A, const float* B, float* C, int M, int K, int N) {
  dim3 grid((N + TN - 1) / TN, (M + TM - 1) / TM);
  sgemm_kernel<<<grid, 256>>>(A, B, C, M, K, N);
  return cudaGetLastError();
}
cudaError_t tl_layernorm(const float* x, float* out, float* scale, const float* w, const float* b, int rows, int d, float eps) {
  layernorm_kernel<<<rows, 256>>>(x, out, scale, w, b, d, eps);
  return cudaGetLastError();
}
cudaError_t tl_attention(const float* q, const float* k, const float* v, float* pattern, float* z, int B, int P, int H, int D, float inv_scale) {
  // The P scores, padded to whole 16-byte granules. compute-sanitizer memcheck on an H200 saw a
  // 12-byte out-of-bounds shared read in this kernel with P = 6 (the tiny-hf fixture): the 1 to 3
  // loads after the last group of 4 in the j <= i loops are merged into one read of the aligned
  // group, up to 2 floats past P when P % 4 is 1 or 2 (the values are unused). Padded: 0 errors.
  size_t smem = ((size_t)P + 3) / 4 * 4 * sizeof(float);
  attention_kernel<<<B * H * P, 128, smem>>>(q, k, v, pattern, z, B, P, H, D, inv_scale);
  return cudaGetLastError();
}
cudaError_t tl_gelu(const float* x, float* out, size_t n) {
  gelu_kernel<<<(unsigned)((n + 255) / 256), 256>>>(x, out, n);
  return cudaGetLastError();
}
}
