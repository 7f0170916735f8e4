//! Generates the etcd v3 API's message types and gRPC service traits from etcd's .proto
//! files (`proto/`), compiled by protox (no protoc needed).

fn main() {
    let files = [
        "proto/etcd/api/etcdserverpb/rpc.proto",
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/api/authpb/auth.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"]).expect("compile etcd's .proto files");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)
        .expect("generate the etcd API");
}
