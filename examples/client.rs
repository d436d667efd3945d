//! A tiny WebSocket client for trying socketshark out: it subscribes to one subscription and
//! prints every frame it receives.
//!
//! ```sh
//! cargo run --example client -- demo.hello                      # ws://127.0.0.1:9000/
//! cargo run --example client -- demo.hello ws://host:9000/
//! ```

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let subscription = args.next().unwrap_or_else(|| "demo.hello".to_owned());
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".to_owned());
    let (mut ws, _) = match connect_async(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect to {url}: {e}");
            std::process::exit(1);
        }
    };
    let subscribe = serde_json::json!({"event": "subscribe", "subscription": subscription});
    if let Err(e) = ws.send(Message::text(subscribe.to_string())).await {
        eprintln!("cannot send: {e}");
        std::process::exit(1);
    }
    eprintln!("connected to {url}, subscribing to {subscription}; Ctrl-C to stop");
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(t)) => println!("{t}"),
            Ok(Message::Close(c)) => {
                eprintln!("closed by the server: {c:?}");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("connection error: {e}");
                std::process::exit(1);
            }
        }
    }
}
