// env.js: jest setup — new native buffers are filled with NaN, so any kernel that reads memory it never wrote
// produces NaN and fails the numeric checks instead of passing by luck. (Set through the addon: jest's process.env
// is a copy that the native getenv never sees. The addon reads the switch once, at its first allocation.)
require('../../lib/native').native.setEnv('MSGC_POISON', '1');
