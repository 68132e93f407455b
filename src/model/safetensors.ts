// The safetensors format lives in tensor/safetensors.ts, where the activation cache (hooks/) can
// read and write it too; the model's loaders keep importing it from here.
export * from '../tensor/safetensors.js';
