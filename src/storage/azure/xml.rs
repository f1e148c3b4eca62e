//! The XML of the Blob service: List Blobs pages (`EnumerationResults`), error bodies
//! (`<Error><Code>`), and the Put Block List body we send. Parsing uses `instant-xml`, the
//! maintained parser rusty-s3 already builds for S3 listings, so no second XML stack is
//! compiled; elements we do not need are skipped by it.

use instant_xml::FromXml;

/// One page of a List Blobs response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub blobs: Vec<(String, u64)>,
    /// Where the next page starts; `None` on the last page.
    pub next_marker: Option<String>,
}

#[derive(FromXml)]
#[xml(rename = "EnumerationResults")]
struct EnumerationResults {
    #[xml(rename = "Blobs")]
    blobs: Option<Blobs>,
    #[xml(rename = "NextMarker")]
    next_marker: Option<String>,
}

#[derive(FromXml)]
#[xml(rename = "Blobs")]
struct Blobs {
    blob: Vec<Blob>,
}

#[derive(FromXml)]
#[xml(rename = "Blob")]
struct Blob {
    name: Name,
    properties: Properties,
}

/// A blob name; `Encoded="true"` (names with characters XML cannot carry) means the text is
/// percent-encoded.
#[derive(FromXml)]
#[xml(rename = "Name")]
struct Name {
    #[xml(attribute, rename = "Encoded")]
    encoded: Option<String>,
    #[xml(direct)]
    value: Option<String>,
}

#[derive(FromXml)]
#[xml(rename = "Properties")]
struct Properties {
    #[xml(rename = "Content-Length")]
    content_length: Option<u64>,
}

#[derive(FromXml)]
#[xml(rename = "Error")]
struct ErrorBody {
    #[xml(rename = "Code")]
    code: Option<String>,
    #[xml(rename = "Message")]
    message: Option<String>,
}

/// Parses one List Blobs page.
pub fn parse_list(body: &str) -> Result<ListPage, String> {
    let r: EnumerationResults =
        instant_xml::from_str(strip_bom(body)).map_err(|e| e.to_string())?;
    let mut blobs = Vec::new();
    for b in r.blobs.map(|b| b.blob).unwrap_or_default() {
        let raw = b.name.value.unwrap_or_default();
        let name = if b.name.encoded.as_deref() == Some("true") {
            percent_encoding::percent_decode_str(&raw)
                .decode_utf8()
                .map_err(|e| format!("encoded blob name {raw:?}: {e}"))?
                .into_owned()
        } else {
            raw
        };
        blobs.push((name, b.properties.content_length.unwrap_or(0)));
    }
    Ok(ListPage {
        blobs,
        next_marker: r.next_marker.filter(|m| !m.is_empty()),
    })
}

/// The `<Code>` and `<Message>` of an error body; empty strings when there are none.
pub fn parse_error(body: &str) -> (String, String) {
    match instant_xml::from_str::<ErrorBody>(strip_bom(body)) {
        Ok(e) => (
            e.code.unwrap_or_default(),
            // Azure appends "RequestId:...\nTime:..." lines: keep the sentence.
            e.message
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

/// The Put Block List body committing these (base64) block IDs in order.
pub fn block_list(ids: &[String]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for id in ids {
        // Block IDs are base64: no character needs escaping.
        s.push_str("<Latest>");
        s.push_str(id);
        s.push_str("</Latest>");
    }
    s.push_str("</BlockList>");
    s
}

/// Azure sends a UTF-8 byte order mark before some XML bodies.
fn strip_bom(s: &str) -> &str {
    let s = s.strip_prefix('\u{feff}').unwrap_or(s);
    // The XML declaration is optional and the parser does not need it.
    match s.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.find("?>").map_or(s, |i| &rest[i + 2..]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_page() {
        // Shaped like the List Blobs example in Microsoft's docs (2020-xx versions).
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\
            <EnumerationResults ServiceEndpoint=\"http://127.0.0.1:10000/devstoreaccount1\" ContainerName=\"c\">\
            <Prefix>main__</Prefix><MaxResults>2</MaxResults>\
            <Blobs>\
              <Blob><Name>main__a b</Name><Properties><Creation-Time>Fri, 04 Dec 2026 10:00:00 GMT</Creation-Time>\
                <Last-Modified>Fri, 04 Dec 2026 10:00:00 GMT</Last-Modified><Etag>0x8D</Etag>\
                <Content-Length>42</Content-Length><Content-Type>application/octet-stream</Content-Type>\
                <Content-MD5 /><BlobType>BlockBlob</BlobType></Properties><OrMetadata /></Blob>\
              <BlobPrefix><Name>dir/</Name></BlobPrefix>\
              <Blob><Name Encoded=\"true\">main__%EF%BF%BF</Name><Properties><Content-Length>0</Content-Length></Properties></Blob>\
            </Blobs>\
            <NextMarker>2!72!MDAwMDA</NextMarker></EnumerationResults>";
        let p = parse_list(xml).unwrap();
        assert_eq!(
            p.blobs,
            vec![
                ("main__a b".to_string(), 42),
                ("main__\u{ffff}".to_string(), 0)
            ]
        );
        assert_eq!(p.next_marker.as_deref(), Some("2!72!MDAwMDA"));
    }

    #[test]
    fn last_and_empty_pages() {
        let p =
            parse_list("<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>").unwrap();
        assert_eq!(p, ListPage::default());
        let p = parse_list(
            "<?xml version=\"1.0\"?><EnumerationResults><Blobs><Blob><Name>a&amp;b</Name><Properties><Content-Length>3</Content-Length></Properties></Blob></Blobs><NextMarker/></EnumerationResults>",
        )
        .unwrap();
        assert_eq!(p.blobs, vec![("a&b".to_string(), 3)]);
        assert!(parse_list("<html>").is_err());
    }

    #[test]
    fn error_body() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>\
            <Message>Server failed to authenticate the request.\nRequestId:87c0\nTime:2026-12-04T10:00:00Z</Message>\
            <AuthenticationErrorDetail>The MAC signature found in the HTTP request is not the same</AuthenticationErrorDetail></Error>";
        assert_eq!(
            parse_error(xml),
            (
                "AuthenticationFailed".to_string(),
                "Server failed to authenticate the request.".to_string()
            )
        );
        assert_eq!(parse_error(""), (String::new(), String::new()));
    }

    #[test]
    fn block_list_body() {
        assert_eq!(
            block_list(&["AA==".into(), "AQ==".into()]),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>AA==</Latest><Latest>AQ==</Latest></BlockList>"
        );
    }
}
