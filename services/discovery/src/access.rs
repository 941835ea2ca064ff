//! Who may write where in etcd. Each worker role has an etcd user of its own that may
//! write only under its role's prefix (`<prefix>/workers/<role>/`), and the coordinator a
//! user that may only read `<prefix>/`; anonymous clients may do nothing once auth is on.
//! Together with the role check in [`crate::membership`] (an entry counts only for the
//! role its key names) a worker cannot register as another role. `umi cluster up` sets
//! this up with [`enable_auth`]; deploy/'s auth Job does the same with etcdctl.

use etcd_client::{Permission, PermissionType};

use crate::{connect, role_prefix, within, DiscoveryError, EtcdTarget};

/// The etcd user that may only read umi's keys (the coordinator's, or a client's).
pub const READER_USER: &str = "coordinator";

/// The etcd user of `role`'s workers: the role's name.
pub fn role_user(role: &str) -> String {
    role.to_string()
}

/// The etcd role granting `role`'s workers write access to their prefix.
pub fn role_grant(role: &str) -> String {
    format!("umi-{role}")
}

/// The etcd role granting read access to all of umi's keys.
pub const READER_GRANT: &str = "umi-reader";

/// The passwords of the users [`enable_auth`] creates.
pub struct Accounts {
    /// etcd's `root` (required before auth can be enabled; umi itself never uses it).
    pub root: String,
    /// [`READER_USER`]'s.
    pub reader: String,
    /// Each worker role's user ([`role_user`]): (role, password).
    pub roles: Vec<(String, String)>,
}

/// Creates the users and grants of [`Accounts`] in an etcd with auth still off, then
/// turns auth on. `admin` reaches etcd with its TLS settings and no user.
pub async fn enable_auth(
    admin: &EtcdTarget,
    prefix: &str,
    accounts: &Accounts,
) -> Result<(), DiscoveryError> {
    let endpoints = &admin.endpoints;
    let mut client = connect(admin).await?;
    within(
        endpoints,
        client.user_add("root", accounts.root.as_str(), None),
    )
    .await?;
    within(endpoints, client.user_grant_role("root", "root")).await?;

    let read_all = format!("{}/", prefix.trim_end_matches('/'));
    within(endpoints, client.role_add(READER_GRANT)).await?;
    within(
        endpoints,
        client.role_grant_permission(
            READER_GRANT,
            Permission::new(PermissionType::Read, read_all).with_prefix(),
        ),
    )
    .await?;
    within(
        endpoints,
        client.user_add(READER_USER, accounts.reader.as_str(), None),
    )
    .await?;
    within(endpoints, client.user_grant_role(READER_USER, READER_GRANT)).await?;

    for (role, password) in &accounts.roles {
        let (user, grant) = (role_user(role), role_grant(role));
        within(endpoints, client.role_add(grant.as_str())).await?;
        within(
            endpoints,
            client.role_grant_permission(
                grant.as_str(),
                Permission::new(PermissionType::Readwrite, role_prefix(prefix, role)).with_prefix(),
            ),
        )
        .await?;
        within(
            endpoints,
            client.user_add(user.as_str(), password.as_str(), None),
        )
        .await?;
        within(
            endpoints,
            client.user_grant_role(user.as_str(), grant.as_str()),
        )
        .await?;
    }
    within(endpoints, client.auth_enable()).await?;
    Ok(())
}

/// Waits until etcd answers a status request, up to `limit`.
pub async fn wait_ready(
    target: &EtcdTarget,
    limit: std::time::Duration,
) -> Result<(), DiscoveryError> {
    let started = std::time::Instant::now();
    loop {
        let attempt = async {
            let mut client = connect(target).await?;
            within(&target.endpoints, client.status()).await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() >= limit => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
