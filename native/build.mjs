#!/usr/bin/env node
// `npm run build:cuda`: compile the CUDA kernels with nvcc, then the N-API addon with node-gyp
// (against the running Node's own headers, so no download is needed). Exits 1 with a clear line
// when nvcc or the CUDA runtime is missing; plain `npm install` never runs this.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const fail = (m) => {
  console.error(`build:cuda: ${m}`);
  process.exit(1);
};

const which = (cmd) => {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
};
const nvcc = process.env.NVCC ?? which('nvcc') ?? (process.env.CUDA_HOME && join(process.env.CUDA_HOME, 'bin', 'nvcc'));
if (!nvcc || !existsSync(nvcc))
  fail('nvcc not found (install the CUDA toolkit, or set NVCC / CUDA_HOME); the WASM backend works without it');

// CUDA_HOME: the env var, /usr/local/cuda, or the newest /usr/local/cuda-*
const candidates = [
  process.env.CUDA_HOME,
  '/usr/local/cuda',
  ...(existsSync('/usr/local')
    ? readdirSync('/usr/local')
        .filter((d) => d.startsWith('cuda-'))
        .sort()
        .reverse()
        .map((d) => join('/usr/local', d))
    : []),
  resolve(dirname(nvcc), '..'),
].filter(Boolean);
const cudaHome = candidates.find(
  (d) => existsSync(join(d, 'include', 'cuda_runtime.h')) && existsSync(join(d, 'lib64', 'libcudart.so')),
);
if (!cudaHome)
  fail(`no CUDA runtime found (looked for include/cuda_runtime.h and lib64/libcudart.so in ${candidates.join(', ')})`);

const nodeDir = resolve(process.execPath, '..', '..');
const fullHeaders = existsSync(join(nodeDir, 'include', 'node', 'node_api.h'));
// a device bundle (scripts/device-bundle.mjs) carries just the Node-API headers
const bundledHeaders = join(here, 'node-headers');
if (!fullHeaders && !existsSync(join(bundledHeaders, 'node_api.h')))
  fail(`Node's headers are not in ${nodeDir}/include/node (install Node from a package or tarball that ships them)`);

mkdirSync(join(here, 'obj'), { recursive: true });
const arch = (process.env.TYPELENS_CUDA_ARCH ?? '80,90').split(',');
const gencode = arch
  .flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`])
  .concat(['-gencode', `arch=compute_${arch.at(-1)},code=compute_${arch.at(-1)}`]);
console.log(`build:cuda: nvcc ${nvcc} (CUDA in ${cudaHome}), sm_${arch.join(', sm_')} + PTX`);
try {
  execFileSync(
    nvcc,
    [
      '-O3',
      '-std=c++17',
      '-Xcompiler',
      '-fPIC',
      ...gencode,
      '-c',
      join(here, 'src', 'kernels.cu'),
      '-o',
      join(here, 'obj', 'kernels.o'),
    ],
    { stdio: 'inherit' },
  );
} catch {
  fail('nvcc failed (see above)');
}
const gyp = join(here, '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
if (fullHeaders && existsSync(gyp)) {
  const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodeDir}`, '--directory', here], {
    stdio: 'inherit',
    env: { ...process.env, CUDA_HOME: cudaHome },
  });
  if (r.status !== 0) fail('node-gyp failed (see above)');
} else {
  // no node-gyp (a device bundle carries no dev dependencies): one g++ line does the same link
  const napi = join(here, '..', 'node_modules', 'node-addon-api');
  const out = join(here, 'build', 'Release');
  mkdirSync(out, { recursive: true });
  const args = [
    '-shared',
    '-fPIC',
    '-O2',
    '-std=c++17',
    '-fexceptions',
    '-DNAPI_VERSION=8',
    '-DNAPI_CPP_EXCEPTIONS',
    `-I${napi}`,
    `-I${fullHeaders ? join(nodeDir, 'include', 'node') : bundledHeaders}`,
    `-I${join(cudaHome, 'include')}`,
    join(here, 'src', 'addon.cc'),
    join(here, 'obj', 'kernels.o'),
    `-L${join(cudaHome, 'lib64')}`,
    '-lcudart',
    `-Wl,-rpath,${join(cudaHome, 'lib64')}`,
    '-o',
    join(out, 'typelens_cuda.node'),
  ];
  console.log('build:cuda: node-gyp not available, linking with g++ directly');
  try {
    execFileSync('g++', args, { stdio: 'inherit' });
  } catch {
    fail('g++ failed (see above)');
  }
}
console.log(`build:cuda: built ${join(here, 'build', 'Release', 'typelens_cuda.node')}`);
