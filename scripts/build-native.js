#!/usr/bin/env node
// build-native.js: the package's install step. Uses a prebuilt binary when one loads for this platform;
// otherwise builds from source with cmake-js (CMakeLists.txt), falling back to node-gyp (binding.gyp).
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.join(__dirname, '..');
const fromSource = process.argv.includes('--from-source') || process.env.npm_config_build_from_source === 'true';

function run(cmd, args) {
  console.error(`msgc: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  return r.status === 0;
}

if (!fromSource) {
  try {
    require('node-gyp-build')(root);
    console.error('msgc: using the existing native binary');
    process.exit(0);
  } catch (_) {
    /* no usable binary: build it */
  }
}

const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
if (run(process.execPath, [cmakeJs, 'compile', '--out', 'build'])) process.exit(0);

console.error('msgc: cmake-js build failed; trying node-gyp');
let nodeGyp = process.env.npm_config_node_gyp;
if (!nodeGyp) {
  try {
    nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
  } catch (_) {
    nodeGyp = null;
  }
}
if (nodeGyp && run(process.execPath, [nodeGyp, 'rebuild'])) process.exit(0);

console.error(
  'msgc: could not build the native addon. Install cmake, a C++17 compiler and oneDNN ' +
    '(Debian/Ubuntu: apt-get install cmake g++ libdnnl-dev) and run npm rebuild msgc.',
);
process.exit(1);
