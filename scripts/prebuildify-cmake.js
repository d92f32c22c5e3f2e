#!/usr/bin/env node
// prebuildify-cmake.js: prebuildify calls this as its "node-gyp" (`rebuild` plus target flags). It builds with
// cmake-js into build/Release, where prebuildify picks up the .node file, and copies the oneDNN shared library
// beside it so the prebuilt binary ($ORIGIN rpath) needs no system package.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.join(__dirname, '..');
const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const r = spawnSync(process.execPath, [cmakeJs, 'rebuild', '--out', 'build'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status || 1);
