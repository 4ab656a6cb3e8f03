//! nginx as ingress-nginx runs it: one `upstream` whose peer a Lua balancer picks from
//! endpoints posted to a configuration location (no reload when pods come and go), an
//! upstream keep-alive pool, HTTP/1.1 upstream, and `proxy_next_upstream error timeout`
//! with 3 tries (so POSTs are not retried once sent, as with ingress-nginx's defaults).

use std::{net::SocketAddr, path::Path};

use tokio::{process::Command, sync::watch};
use tokio_util::sync::CancellationToken;

use super::{Counters, ProxyTally, Started, admin_call, spawn, wait_listening};
use crate::{chart::tool, http1::Request, sim::network::Routed};

pub(super) async fn start(
    dir: &Path,
    mut routed: watch::Receiver<Vec<Routed>>,
    stop: CancellationToken,
) -> Result<Started, String> {
    let listen = crate::free_loopback_address().map_err(|e| e.to_string())?;
    let configuration = crate::free_loopback_address().map_err(|e| e.to_string())?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, listen, configuration)).map_err(|e| e.to_string())?;
    let mut command = Command::new(tool("nginx"));
    command.arg("-p").arg(dir).arg("-c").arg(&conf);
    let mut process = spawn(command, dir, "nginx")?;
    wait_listening(configuration, &mut process, dir).await?;

    // The controller's part: post every change of the endpoints to the balancer.
    tokio::spawn(async move {
        loop {
            let body = peers(&routed.borrow_and_update());
            let post = Request::post("/configuration/backends", &body);
            if let Err(err) = admin_call(configuration, post).await {
                eprintln!("nginx configuration: {err}");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = routed.changed() => if changed.is_err() { return },
            }
        }
    });
    wait_listening(listen, &mut process, dir).await?;
    Ok(Started {
        addr: listen,
        process,
        counters: Counters::NginxLogs(dir.to_path_buf()),
    })
}

/// `127.0.0.1:40001 127.0.0.1:40007`: what the Lua balancer reads.
fn peers(routed: &[Routed]) -> String {
    let peers: Vec<String> = routed
        .iter()
        .map(|routed| routed.addr.to_string())
        .collect();
    peers.join(" ")
}

fn config(dir: &Path, listen: SocketAddr, configuration: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events {{ worker_connections 8192; }}
http {{
    log_format upstreaminfo '$status|$request_method|$upstream_addr|$upstream_status';
    access_log {dir}/access.log upstreaminfo;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    lua_shared_dict balancer 1m;

    upstream upstream_balancer {{
        server 0.0.0.1; # a placeholder, as in ingress-nginx: the Lua balancer picks the peer
        balancer_by_lua_block {{
            local balancer = require "ngx.balancer"
            local shared = ngx.shared.balancer
            local peers = {{}}
            for peer in string.gmatch(shared:get("peers") or "", "%S+") do
                peers[#peers + 1] = peer
            end
            if #peers == 0 then
                ngx.log(ngx.ERR, "no ready endpoint")
                return ngx.exit(503)
            end
            local turn = shared:incr("turn", 1, 0)
            local host, port = string.match(peers[turn % #peers + 1], "^(.+):(%d+)$")
            if not ngx.ctx.tried then
                ngx.ctx.tried = true
                balancer.set_more_tries(1)
            end
            local ok, err = balancer.set_current_peer(host, tonumber(port))
            if not ok then ngx.log(ngx.ERR, "set_current_peer: ", err) end
        }}
        keepalive 320;
        keepalive_timeout 60s;
        keepalive_requests 10000;
    }}

    server {{
        listen {listen};
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_pass http://upstream_balancer;
        }}
    }}

    server {{
        listen {configuration};
        location = /configuration/backends {{
            client_body_buffer_size 64k;
            content_by_lua_block {{
                ngx.req.read_body()
                ngx.shared.balancer:set("peers", ngx.req.get_body_data() or "")
                ngx.say("ok")
            }}
        }}
    }}
}}
"#
    )
}

/// Upstream errors from the error log; retries from the access log, where a request that
/// tried more than one pod lists each try's status (`502, 200`).
pub(super) fn tally(dir: &Path) -> Result<ProxyTally, String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|err| format!("nginx {name}: {err}"))
    };
    // Every error this nginx logs is about an upstream: it only proxies.
    let errors = read("error.log")?;
    let errors: Vec<&str> = errors
        .lines()
        .filter(|line| line.contains("[error]"))
        .collect();
    let no_endpoint = errors
        .iter()
        .filter(|line| line.contains("no ready endpoint"))
        .count() as u64;
    let upstream_errors = errors.len() as u64 - no_endpoint;
    // `$upstream_status` lists one status per try: `502, 200`.
    let retries = read("access.log")?
        .lines()
        .filter_map(|line| line.rsplit('|').next())
        .map(|statuses| statuses.matches(',').count() as u64)
        .sum();
    Ok(ProxyTally {
        upstream_errors,
        retries,
        no_endpoint,
        detail: format!(
            "error.log: {upstream_errors} upstream errors; access.log: {retries} extra tries"
        ),
    })
}
