// A helper thread for intra-op matmul: it shares the kernels' WebAssembly.Memory, sleeps on a
// shared control block, runs the panel range it is given and signals completion. No messages
// per matmul: Atomics only, so the caller's forward pass stays synchronous.
import { platform } from '../../platform/index.js';
import { CTRL, CtrlState, type MatmulFn } from './control.js';

// the data comes with the thread's start (workerData in Node, the first message in a browser)
platform.threadMain((data) => {
  const {
    module,
    memory,
    ctrl: sab,
  } = data as {
    module: WebAssembly.Module;
    memory: WebAssembly.Memory;
    ctrl: SharedArrayBuffer;
  };
  serve(new Int32Array(sab), new WebAssembly.Instance(module, { env: { memory } }).exports.matmul as MatmulFn);
});

function serve(ctrl: Int32Array, kernel: MatmulFn): void {
  Atomics.store(ctrl, CTRL.ready, 1);
  for (;;) {
    // matmuls come in bursts (one forward is ~50 of them): spin briefly before sleeping, since a
    // futex wake-up costs tens of microseconds per matmul
    for (let i = 0; i < 20000 && Atomics.load(ctrl, CTRL.state) === CtrlState.idle; i++);
    Atomics.wait(ctrl, CTRL.state, CtrlState.idle);
    const s = Atomics.load(ctrl, CTRL.state);
    if (s === CtrlState.exit) break;
    if (s !== CtrlState.job) continue;
    try {
      kernel(
        ctrl[CTRL.a],
        ctrl[CTRL.b],
        ctrl[CTRL.c],
        ctrl[CTRL.nrb],
        ctrl[CTRL.K],
        ctrl[CTRL.p0],
        ctrl[CTRL.p1],
        ctrl[CTRL.npad],
        ctrl[CTRL.kind],
        ctrl[CTRL.tmp],
      );
      Atomics.store(ctrl, CTRL.state, CtrlState.done);
    } catch {
      Atomics.store(ctrl, CTRL.state, CtrlState.failed);
    }
    Atomics.notify(ctrl, CTRL.state);
  }
}
