{
  "targets": [
    {
      "target_name": "msgc",
      "sources": [
        "<!@(node -e \"const fs=require('fs');for(const d of ['native/core','native/cpu','native/napi'])for(const f of fs.readdirSync(d).sort())if(f.endsWith('.cc'))console.log(d+'/'+f)\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('path').dirname(require.resolve('node-addon-api/napi.h'))\")",
        "native/include",
        "/usr/include/oneapi/dnnl"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-fexceptions", "-frtti"],
      "libraries": ["-ldnnl", "-fopenmp", "-Wl,-rpath,'$$ORIGIN'"]
    }
  ]
}
