//! Generates the etcd v3 API's message types and gRPC service traits from etcd's .proto
//! files (`proto/`), compiled by protox (no protoc needed), and serde for the same messages
//! in proto3's JSON mapping (pbjson), for the JSON gateway.

use prost::Message;

fn main() {
    let files = [
        "proto/etcd/api/etcdserverpb/rpc.proto",
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/authpb/auth.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"]).expect("compile etcd's .proto files");
    let bytes = descriptors.encode_to_vec();
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)
        .expect("generate the etcd API");
    pbjson_build::Builder::new()
        .register_descriptors(&bytes)
        .expect("register the descriptors")
        .preserve_proto_field_names()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])
        .expect("generate the JSON mapping");
}
