// env.js: jest setup — new native buffers are filled with NaN, so any kernel that reads memory it never wrote
// produces NaN and fails the numeric checks instead of passing by luck.
process.env.MSGC_POISON = '1';
