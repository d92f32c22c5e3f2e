// Tests are TypeScript, run through ts-jest against lib/ (the native addon must be built: `npm ci` does it).
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testTimeout: 120000,
  setupFiles: ['<rootDir>/test/helpers/env.js'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: { strict: true, esModuleInterop: true, types: ['node', 'jest'] }, diagnostics: { warnOnly: false } }] },
};
