// ESLint flat config: typescript-eslint's recommended rules (not type-checked: fast, no tsconfig
// project needed), with the pure-style rules left to prettier (eslint-config-prettier last).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: [
      'dist/',
      'node_modules/',
      'native/build/',
      'native/obj/',
      '.device/',
      '.tap/',
      'artifacts/',
      'demo-report/',
      'weights/',
      'test/fixtures/',
      'bench/results/',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: 'module', globals: { ...globals.node } },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // real bugs stay errors; a leading underscore marks a deliberately unused name
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // typed arrays, worker messages and JSON are sometimes untyped on purpose: visible, not fatal
      '@typescript-eslint/no-explicit-any': 'warn',
      // `let [name, layer, type] = key; layer = ...` is fine: only flag when every destructured name could be const
      'prefer-const': ['error', { destructuring: 'all' }],
    },
  },
  { files: ['**/*.cjs'], languageOptions: { sourceType: 'commonjs' } },
  prettier,
);
