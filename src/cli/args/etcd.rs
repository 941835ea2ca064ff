//! Where etcd is, for every subcommand that registers in it or discovers through it.

use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct EtcdArgs {
    /// etcd endpoints, e.g. http://127.0.0.1:2379 (comma-separated for a cluster).
    #[arg(long, value_delimiter = ',', env = "UMI_ETCD")]
    pub etcd: Vec<String>,
    /// Key prefix of umi's entries in etcd.
    #[arg(long, default_value = "/umi", env = "UMI_ETCD_PREFIX")]
    pub etcd_prefix: String,
}

impl EtcdArgs {
    /// The endpoints given (an empty value, as an unset env var gives, is none).
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd
            .iter()
            .filter(|e| !e.is_empty())
            .cloned()
            .collect()
    }

    pub fn is_set(&self) -> bool {
        !self.endpoints().is_empty()
    }
}
