"""numpy/OpenBLAS side of `npm run bench -- matmul`: GFLOP/s for each M,K,N given on argv.
Prints one JSON object {"M,K,N": gflops}. Thread count comes from OPENBLAS_NUM_THREADS."""
import json, sys, time
import numpy as np

out = {}
for spec in sys.argv[1:]:
    M, K, N = map(int, spec.split(','))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    c = a @ b
    reps, t0 = 0, time.perf_counter()
    best = float('inf')
    while time.perf_counter() - t0 < 1.0 or reps < 3:
        s = time.perf_counter(); np.matmul(a, b, out=c); best = min(best, time.perf_counter() - s); reps += 1
    out[spec] = 2 * M * K * N / best / 1e9
print(json.dumps(out))
