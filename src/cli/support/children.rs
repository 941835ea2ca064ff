//! The command lines of the child processes a local cluster starts (`umi worker`,
//! `umi coordinator`, etcd), each built in one typed place. umi's own flags are spelled
//! by the clap definitions they fill (looked up by argument id), so a renamed flag
//! renames them here too; a renamed or removed argument fails this module's test, which
//! parses every command line built here with umi's real parser.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Command};

use crate::cli::coordinator::CoordinatorArgs;
use crate::cli::worker::WorkerArgs;

/// `--<long>` of the argument with id `id` (its field's name) of the flag group `A`.
/// An id `A` does not define is a bug in this module, caught by its test.
fn flag<A: Args>(id: &str) -> OsString {
    let command = A::augment_args(Command::new("umi"));
    let long = command
        .get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_long())
        .unwrap_or_else(|| panic!("no --flag with the id {id:?}"));
    format!("--{long}").into()
}

/// Appends `--<flag of id> value` to `args`.
fn push<A: Args>(args: &mut Vec<OsString>, id: &str, value: impl Into<OsString>) {
    args.push(flag::<A>(id));
    args.push(value.into());
}

/// The TLS certificate, key and token file every server of the cluster gets.
#[derive(Debug, Clone)]
pub struct ServerSecrets {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub token: PathBuf,
}

impl ServerSecrets {
    fn push<A: Args>(&self, args: &mut Vec<OsString>) {
        push::<A>(args, "tls_cert", &self.cert);
        push::<A>(args, "tls_key", &self.key);
        push::<A>(args, "auth_token_file", &self.token);
    }
}

/// How a child reaches the cluster's etcd: its URL and, when etcd is secured, the CA,
/// client certificate and the etcd user with its password file.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    pub url: String,
    pub tls: Option<EtcdClientTls>,
    /// The etcd user and the file holding its password.
    pub user: Option<(String, PathBuf)>,
}

/// etcd's CA and the client certificate and key it requires.
#[derive(Debug, Clone)]
pub struct EtcdClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl EtcdClient {
    fn push<A: Args>(&self, args: &mut Vec<OsString>) {
        push::<A>(args, "etcd", &self.url);
        if let Some(tls) = &self.tls {
            push::<A>(args, "etcd_ca", &tls.ca);
            push::<A>(args, "etcd_cert", &tls.cert);
            push::<A>(args, "etcd_key", &tls.key);
        }
        if let Some((user, password_file)) = &self.user {
            push::<A>(args, "etcd_user", user);
            push::<A>(args, "etcd_password_file", password_file);
        }
    }
}

/// What serves a worker's role and how (its engine, model and batch settings).
#[derive(Debug, Clone, Default)]
pub struct WorkerSettings {
    /// The simulated engine (a test double) instead of a model.
    pub sim: bool,
    pub sim_profile: Option<PathBuf>,
    pub dtype: Option<String>,
    pub device: Option<String>,
    pub max_batch: usize,
    /// `--prefill-chunk`; the worker's default when `None`.
    pub prefill_chunk: Option<usize>,
    pub prefix_cache_mb: usize,
    pub max_queue: usize,
    pub model: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    /// A LoRA adapter merged into the model at load.
    pub adapter: Option<PathBuf>,
}

/// `umi worker` serving one role, registered in a loopback etcd.
pub struct WorkerCommand<'a> {
    pub role: &'a str,
    pub listen: &'a str,
    pub etcd: &'a EtcdClient,
    pub secrets: &'a ServerSecrets,
    pub settings: &'a WorkerSettings,
    pub metrics_listen: Option<SocketAddr>,
}

impl WorkerCommand<'_> {
    /// The arguments after the program: `worker --role ... --listen ...`.
    pub fn args(&self) -> Vec<OsString> {
        type W = WorkerArgs;
        let s = self.settings;
        let mut args = vec![OsString::from("worker")];
        push::<W>(&mut args, "role", self.role);
        push::<W>(&mut args, "listen", self.listen);
        self.etcd.push::<W>(&mut args);
        self.secrets.push::<W>(&mut args);
        if let Some(dtype) = &s.dtype {
            push::<W>(&mut args, "dtype", dtype);
        }
        if let Some(device) = &s.device {
            push::<W>(&mut args, "device", device);
        }
        push::<W>(&mut args, "max_batch", s.max_batch.to_string());
        if let Some(chunk) = s.prefill_chunk {
            push::<W>(&mut args, "prefill_chunk", chunk.to_string());
        }
        push::<W>(&mut args, "prefix_cache_mb", s.prefix_cache_mb.to_string());
        push::<W>(&mut args, "max_queue", s.max_queue.to_string());
        if s.sim {
            push::<W>(&mut args, "engine", "sim");
            if let Some(profile) = &s.sim_profile {
                push::<W>(&mut args, "sim_profile", profile);
            }
        }
        if let Some(model) = &s.model {
            push::<W>(&mut args, "model", model);
        }
        if let Some(tokenizer) = &s.tokenizer {
            push::<W>(&mut args, "tokenizer", tokenizer);
        }
        if let Some(adapter) = &s.adapter {
            push::<W>(&mut args, "adapter", adapter);
        }
        if let Some(addr) = self.metrics_listen {
            push::<W>(&mut args, "metrics_listen", addr.to_string());
        }
        args
    }
}

/// The coordinator's budgets and routing (its other flags are the cluster's).
#[derive(Debug, Clone, Default)]
pub struct CoordinatorSettings {
    pub concurrency: usize,
    pub max_pending: Option<usize>,
    pub max_steps: Option<usize>,
    pub max_new_tokens: Option<usize>,
    /// `--routing`'s value (its default without one).
    pub routing: Option<&'static str>,
}

/// `umi coordinator` finding its workers in a loopback etcd, journaling its tasks.
pub struct CoordinatorCommand<'a> {
    pub listen: &'a str,
    pub etcd: &'a EtcdClient,
    pub secrets: &'a ServerSecrets,
    /// The CA the workers' certificates are signed by.
    pub ca: &'a PathBuf,
    /// The token the coordinator presents to the workers.
    pub worker_token: &'a PathBuf,
    pub settings: &'a CoordinatorSettings,
    pub task_journal: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
}

impl CoordinatorCommand<'_> {
    /// The arguments after the program: `coordinator --listen ...`.
    pub fn args(&self) -> Vec<OsString> {
        type C = CoordinatorArgs;
        let s = self.settings;
        let mut args = vec![OsString::from("coordinator")];
        push::<C>(&mut args, "listen", self.listen);
        self.etcd.push::<C>(&mut args);
        self.secrets.push::<C>(&mut args);
        push::<C>(&mut args, "tls_ca", self.ca);
        push::<C>(&mut args, "worker_token_file", self.worker_token);
        if let Some(n) = s.max_steps {
            push::<C>(&mut args, "max_steps", n.to_string());
        }
        if let Some(n) = s.max_new_tokens {
            push::<C>(&mut args, "max_new_tokens", n.to_string());
        }
        push::<C>(&mut args, "concurrency", s.concurrency.to_string());
        if let Some(n) = s.max_pending {
            push::<C>(&mut args, "max_pending", n.to_string());
        }
        if let Some(routing) = s.routing {
            push::<C>(&mut args, "routing", routing);
        }
        push::<C>(&mut args, "task_journal", &self.task_journal);
        if let Some(addr) = self.metrics_listen {
            push::<C>(&mut args, "metrics_listen", addr.to_string());
        }
        args
    }
}

/// A single-member etcd on loopback, its data in `data_dir`.
pub struct EtcdCommand<'a> {
    pub data_dir: PathBuf,
    /// `http(s)://127.0.0.1:<port>` for clients, and for its peer (the next port).
    pub client_url: &'a str,
    pub peer_url: &'a str,
    /// TLS on both listeners, client certificates from this CA required on both (the
    /// URLs are then https://).
    pub tls: Option<EtcdServerTls>,
}

/// etcd's certificate and key, and the CA whose client certificates it accepts.
#[derive(Debug, Clone)]
pub struct EtcdServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl EtcdCommand<'_> {
    /// etcd's arguments (its flags, not umi's: they are spelled here only).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--name".into(), "umi".into(), "--data-dir".into()];
        args.push(self.data_dir.clone().into());
        args.extend(["--logger=zap".into(), "--log-level=warn".into()]);
        for (flag, url) in [
            ("--listen-client-urls", self.client_url),
            ("--advertise-client-urls", self.client_url),
            ("--listen-peer-urls", self.peer_url),
            ("--initial-advertise-peer-urls", self.peer_url),
        ] {
            args.extend([flag.into(), url.into()]);
        }
        args.extend([
            "--initial-cluster".into(),
            format!("umi={}", self.peer_url).into(),
        ]);
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &tls.cert),
                ("--key-file", &tls.key),
                ("--trusted-ca-file", &tls.ca),
                ("--peer-cert-file", &tls.cert),
                ("--peer-key-file", &tls.key),
                ("--peer-trusted-ca-file", &tls.ca),
            ] {
                args.extend([flag.into(), path.clone().into()]);
            }
            args.extend([
                "--client-cert-auth=true".into(),
                "--peer-client-cert-auth=true".into(),
            ]);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: Vec<OsString>) -> crate::Command {
        let argv = std::iter::once(OsString::from("umi")).chain(args);
        match crate::Args::try_parse_from(argv) {
            Ok(parsed) => parsed.command,
            Err(e) => panic!("umi refuses a child's command line: {e}"),
        }
    }

    fn secrets() -> ServerSecrets {
        ServerSecrets {
            cert: "s/cert.pem".into(),
            key: "s/key.pem".into(),
            token: "s/token".into(),
        }
    }

    fn etcd_client(user: &str) -> EtcdClient {
        EtcdClient {
            url: "https://127.0.0.1:2379".into(),
            tls: Some(EtcdClientTls {
                ca: "s/etcd-ca.pem".into(),
                cert: "s/etcd-cert.pem".into(),
                key: "s/etcd-key.pem".into(),
            }),
            user: Some((user.into(), format!("s/{user}-password").into())),
        }
    }

    #[test]
    fn every_worker_flag_is_one_umi_worker_takes_into_the_right_field() {
        let settings = WorkerSettings {
            sim: true,
            sim_profile: Some("profile.json".into()),
            dtype: Some("f32".into()),
            device: Some("cuda:1".into()),
            max_batch: 7,
            prefill_chunk: Some(300),
            prefix_cache_mb: 123,
            max_queue: 45,
            model: Some("m.gguf".into()),
            tokenizer: Some("tokenizer.json".into()),
            adapter: Some("planner-lora".into()),
        };
        let secrets = secrets();
        let command = WorkerCommand {
            role: "caller",
            listen: "127.0.0.1:0",
            etcd: &etcd_client("caller"),
            secrets: &secrets,
            settings: &settings,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9000))),
        };
        let crate::Command::Worker(w) = parse(command.args()) else {
            panic!("not parsed as `umi worker`")
        };
        assert_eq!(w.role, [umi_core::agent::RoleKind::Caller]);
        assert_eq!(w.listen.to_string(), "127.0.0.1:0");
        assert_eq!(w.etcd.etcd, ["https://127.0.0.1:2379"]);
        assert_eq!(w.etcd.etcd_ca, Some("s/etcd-ca.pem".into()));
        assert_eq!(w.etcd.etcd_cert, Some("s/etcd-cert.pem".into()));
        assert_eq!(w.etcd.etcd_key, Some("s/etcd-key.pem".into()));
        assert_eq!(w.etcd.etcd_user.as_deref(), Some("caller"));
        assert_eq!(w.etcd.etcd_password_file, Some("s/caller-password".into()));
        assert_eq!(w.security.tls_cert, Some("s/cert.pem".into()));
        assert_eq!(w.security.tls_key, Some("s/key.pem".into()));
        assert_eq!(w.security.auth_token_file, Some("s/token".into()));
        assert!(w.engine.is_sim());
        assert_eq!(w.engine.sim_profile, Some("profile.json".into()));
        assert_eq!(w.model.dtype.to_string(), "f32");
        assert_eq!(w.model.device, "cuda:1");
        assert_eq!(
            (
                w.model.max_batch,
                w.model.prefill_chunk,
                w.model.prefix_cache_mb,
                w.model.max_queue
            ),
            (7, 300, 123, 45)
        );
        assert_eq!(w.model.model, Some("m.gguf".into()));
        assert_eq!(w.model.tokenizer, Some("tokenizer.json".into()));
        assert_eq!(w.model.adapter, Some("planner-lora".into()));
        assert_eq!(w.metrics.metrics_listen, command.metrics_listen);
    }

    #[test]
    fn every_coordinator_flag_is_one_umi_coordinator_takes_into_the_right_field() {
        let settings = CoordinatorSettings {
            concurrency: 9,
            max_pending: Some(101),
            max_steps: Some(12),
            max_new_tokens: Some(128),
            routing: Some("least-outstanding"),
        };
        let (secrets, ca, token) = (secrets(), "s/ca.pem".into(), "s/token".into());
        let etcd = etcd_client("coordinator");
        let command = CoordinatorCommand {
            listen: "127.0.0.1:50050",
            etcd: &etcd,
            secrets: &secrets,
            ca: &ca,
            worker_token: &token,
            settings: &settings,
            task_journal: "d/tasks.jsonl".into(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9001))),
        };
        let crate::Command::Coordinator(c) = parse(command.args()) else {
            panic!("not parsed as `umi coordinator`")
        };
        assert_eq!(c.listen.to_string(), "127.0.0.1:50050");
        assert_eq!(c.remote.etcd.etcd, ["https://127.0.0.1:2379"]);
        assert_eq!(c.remote.etcd.etcd_user.as_deref(), Some("coordinator"));
        assert_eq!(
            c.remote.etcd.etcd_password_file,
            Some("s/coordinator-password".into())
        );
        assert_eq!(c.security.tls_cert, Some("s/cert.pem".into()));
        assert_eq!(c.security.auth_token_file, Some("s/token".into()));
        assert_eq!(c.remote.tls.tls_ca.as_ref(), Some(&ca));
        assert_eq!(c.remote.worker_token_file.as_ref(), Some(&token));
        assert_eq!((c.concurrency, c.max_pending, c.max_steps), (9, 101, 12));
        assert_eq!(c.sampling.max_new_tokens, Some(128));
        assert!(matches!(
            c.remote.routing,
            crate::cli::args::remote::RoutingArg::LeastOutstanding
        ));
        assert_eq!(c.task_journal, Some("d/tasks.jsonl".into()));
        assert_eq!(c.metrics.metrics_listen, command.metrics_listen);
        // The optional ones left out still parse (their defaults apply).
        let bare = CoordinatorSettings {
            concurrency: 1,
            ..CoordinatorSettings::default()
        };
        let command = CoordinatorCommand {
            settings: &bare,
            metrics_listen: None,
            ..command
        };
        assert!(matches!(
            parse(command.args()),
            crate::Command::Coordinator(_)
        ));
    }

    #[test]
    fn etcd_gets_one_member_on_the_given_urls() {
        let args = EtcdCommand {
            data_dir: "d/etcd".into(),
            client_url: "http://127.0.0.1:2379",
            peer_url: "http://127.0.0.1:2380",
            tls: None,
        }
        .args();
        let text: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            text.join(" "),
            "--name umi --data-dir d/etcd --logger=zap --log-level=warn \
             --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
             --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
             --initial-cluster umi=http://127.0.0.1:2380"
        );
        // Secured: both listeners serve TLS and require client certificates.
        let args = EtcdCommand {
            data_dir: "d/etcd".into(),
            client_url: "https://127.0.0.1:2379",
            peer_url: "https://127.0.0.1:2380",
            tls: Some(EtcdServerTls {
                cert: "s/etcd.pem".into(),
                key: "s/etcd-key.pem".into(),
                ca: "s/ca.pem".into(),
            }),
        }
        .args();
        let text: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        let text = text.join(" ");
        for want in [
            "--cert-file s/etcd.pem --key-file s/etcd-key.pem --trusted-ca-file s/ca.pem",
            "--peer-cert-file s/etcd.pem --peer-key-file s/etcd-key.pem --peer-trusted-ca-file s/ca.pem",
            "--client-cert-auth=true --peer-client-cert-auth=true",
        ] {
            assert!(text.contains(want), "{want} missing from: {text}");
        }
    }
}
