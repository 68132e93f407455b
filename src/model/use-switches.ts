// TL's use_* switches (use_attn_result, use_split_qkv_input, use_attn_in, use_hook_mlp_in): off by
// default, each makes a dormant hook point fire. A model holds one UseSwitches; its set_use_*
// methods and its flagEnabled (the hook registry's question) go through it.
import { TypelensError } from '../errors.js';
import type { UseFlags } from './layers.js';

export class UseSwitches {
  private readonly use: Required<UseFlags> = {
    attnResult: false,
    splitQkvInput: false,
    attnIn: false,
    hookMlpIn: false,
  };

  /** The switches that are on, or undefined (the forward then costs nothing extra). */
  get flags(): UseFlags | undefined {
    const u = this.use;
    return u.attnResult || u.splitQkvInput || u.attnIn || u.hookMlpIn ? { ...u } : undefined;
  }
  /** Whether the hook registry's flag (a dormant point's `needs`, TL's use_* name) is on. */
  enabled(flag: string): boolean {
    switch (flag) {
      case 'use_attn_result':
        return this.use.attnResult;
      case 'use_split_qkv_input':
        return this.use.splitQkvInput;
      case 'use_attn_in':
        return this.use.attnIn;
      case 'use_hook_mlp_in':
        return this.use.hookMlpIn;
      default:
        return false;
    }
  }
  setAttnResult(on: boolean): void {
    this.use.attnResult = on;
  }
  setSplitQkvInput(on: boolean): void {
    if (on && this.use.attnIn)
      throw new TypelensError('setUseSplitQkvInput: use_attn_in is on; TL does not allow both at once', 'EINPUT');
    this.use.splitQkvInput = on;
  }
  setHookMlpIn(on: boolean): void {
    this.use.hookMlpIn = on;
  }
  setAttnIn(on: boolean): void {
    if (on && this.use.splitQkvInput)
      throw new TypelensError('setUseAttnIn: use_split_qkv_input is on; TL does not allow both at once', 'EINPUT');
    this.use.attnIn = on;
  }
}
