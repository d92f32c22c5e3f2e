#!/usr/bin/env node
// prebuild.js: makes prebuilds/<platform>-<arch>/ with the N-API binary (prebuildify) and the shared libraries
// it links that users may not have (libdnnl.so.2, libgomp.so.1), found next to the binary through its $ORIGIN rpath.
'use strict';
const { spawnSync, execSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const bin = path.join(path.dirname(require.resolve('prebuildify/package.json')), 'bin.js');
const r = spawnSync(process.execPath, [bin, '--napi', '--strip', '--node-gyp', path.join(__dirname, 'prebuildify-cmake.js')], {
  cwd: root,
  stdio: 'inherit',
});
if (r.status !== 0) process.exit(r.status || 1);
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const node = fs.readdirSync(dir).find((f) => f.endsWith('.node'));
const ldd = execSync(`ldd ${JSON.stringify(path.join(dir, node))}`).toString();
for (const line of ldd.split('\n')) {
  const m = line.match(/(libdnnl\.so\.\d+|libgomp\.so\.\d+) => (\S+)/);
  if (m) {
    fs.copyFileSync(fs.realpathSync(m[2]), path.join(dir, m[1]));
    console.error(`prebuild: bundled ${m[1]}`);
  }
}
