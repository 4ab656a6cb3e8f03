//! axum's hello world on `ADDR`; prints `ready` once listening.

use axum::{Router, routing::get};

#[tokio::main]
async fn main() {
    let address = std::env::var("ADDR").expect("ADDR names the address to listen on");
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    println!("ready");
    let app = Router::new().route("/", get(|| async { "hello\n" }));
    axum::serve(listener, app).await.unwrap();
}
