{
  "targets": [
    {
      "target_name": "sfc_io",
      "conditions": [
        ["OS=='linux'", {
          "sources": [
            "src/dataplane/native/addon.cc",
            "src/dataplane/native/port.cc",
            "src/dataplane/native/afpacket.cc",
            "src/dataplane/native/tap.cc",
            "src/dataplane/native/offload.cc",
            "src/dataplane/native/afxdp.cc",
            "src/dataplane/native/xdpprog.cc",
            "src/dataplane/native/xskarena.cc"
          ]
        }]
      ],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    }
  ]
}
