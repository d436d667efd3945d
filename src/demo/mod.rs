//! The demo page (issue 15): with `ws.demo` (on in the no-config quick start) a plain HTTP
//! `GET /` on the WebSocket port gets a page that connects with the JS client, subscribes to
//! `demo.room`, shows what arrives, and publishes through the HTTP API; `GET /socketshark.js`
//! is the client (`clients/js/dist`). Other plain requests still get the original's `426`.

/// The page; `{{API}}` is replaced by the publish API's URL.
const PAGE: &str = include_str!("index.html");
/// The JS client, as built in clients/js/dist.
pub const CLIENT: &str = include_str!("../../clients/js/dist/socketshark.js");

/// What the demo serves, built once the API port is known.
#[derive(Debug)]
pub struct Demo {
    page: String,
}

impl Demo {
    /// `api`: the publish URL (`None` without `[api]`: the page says it cannot publish).
    pub fn new(api: Option<&str>) -> Demo {
        Demo {
            page: PAGE.replace("{{API}}", api.unwrap_or("")),
        }
    }

    /// The answer to `GET path`: content type and body.
    pub fn get(&self, path: &str) -> Option<(&'static str, &str)> {
        match path.split('?').next().unwrap_or(path) {
            "/" | "/index.html" => Some(("text/html; charset=utf-8", &self.page)),
            "/socketshark.js" => Some(("text/javascript; charset=utf-8", CLIENT)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_with_the_api_url_and_the_client() {
        let d = Demo::new(Some("http://127.0.0.1:9001/publish"));
        let (ct, page) = d.get("/").unwrap();
        assert!(ct.starts_with("text/html"));
        assert!(page.contains("http://127.0.0.1:9001/publish") && !page.contains("{{API}}"));
        let (ct, js) = d.get("/socketshark.js?v=1").unwrap();
        assert!(ct.starts_with("text/javascript"));
        assert!(js.contains("class SocketShark"));
        assert!(d.get("/other").is_none());
    }
}
