//! One code generation for the whole `umi.v1` package: the role workers' and the
//! coordinator's services share one `pb` module.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../../proto/umi/v1/roles.proto",
        "../../proto/umi/v1/coordinator.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["../../proto"])?;
    Ok(())
}
