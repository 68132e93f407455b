{
  "targets": [{
    "target_name": "typelens_cuda",
    "sources": ["src/addon.cc"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<(cuda_home)/include"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
    "cflags_cc": ["-std=c++17", "-fexceptions"],
    "cflags_cc!": ["-fno-exceptions"],
    "libraries": ["<(module_root_dir)/obj/kernels.o", "-L<(cuda_home)/lib64", "-lcudart", "-Wl,-rpath,<(cuda_home)/lib64"]
  }],
  "variables": { "cuda_home%": "<!(node -p \"process.env.CUDA_HOME || '/usr/local/cuda'\")" }
}
