// Kept for the modules that import writeFileAtomic from here; the implementation (and every other
// file-system call) lives in platform/files.ts, which a browser build swaps out.
export { writeFileAtomic } from '../platform/files.js';
