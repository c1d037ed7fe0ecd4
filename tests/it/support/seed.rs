//! Seeding any registry over HTTP (the distribution registry, Aerugo cores started as
//! processes) with [`TestImage`]s.
//!
//! Pushes use `POST` + `PUT ?digest=` (the monolithic `POST ?digest=` is optional in the spec,
//! and the distribution registry answers it with a plain upload session).

use reqwest::Url;

use super::image::{TestImage, sha256};
use crate::distribution::{expect_status, header};

/// A client pushing to one registry.
pub struct Seeder {
    base: Url,
    http: reqwest::Client,
}

impl Seeder {
    /// `base`: `http://host:port`.
    pub fn new(base: &str) -> Seeder {
        Seeder {
            base: Url::parse(base).expect("registry base URL"),
            http: super::edge::http_client(),
        }
    }

    /// A client sending `user`'s basic credentials with every request (a registry with users).
    pub fn signed_in(base: &str, user: &str, password: &str) -> Seeder {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut credentials =
            reqwest::header::HeaderValue::from_str(&format!("Basic {pair}")).expect("header");
        credentials.set_sensitive(true);
        let headers =
            reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, credentials)]);
        Seeder {
            base: Url::parse(base).expect("registry base URL"),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        }
    }

    fn url(&self, path_or_url: &str) -> Url {
        self.base.join(path_or_url).expect("URL")
    }

    /// Pushes one blob (`POST`, then `PUT ?digest=` with the bytes); returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let started = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        let (headers, _) = expect_status(started, 202).await;
        let mut location = self.url(header(&headers, "location"));
        location.query_pairs_mut().append_pair("digest", &digest);
        let finished = self
            .http
            .put(location)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT upload");
        let (headers, _) = expect_status(finished, 201).await;
        assert_eq!(header(&headers, "docker-content-digest"), digest);
        digest
    }

    /// `PUT` of a manifest under `reference`; returns the digest the registry reported.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let response = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        let (headers, _) = expect_status(response, 201).await;
        let digest = header(&headers, "docker-content-digest").to_owned();
        assert_eq!(digest, sha256(body));
        digest
    }

    /// Pushes every blob of `image`, then its manifest tagged `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &TestImage) {
        for blob in image.blobs() {
            self.push_blob(repo, &blob.bytes()).await;
        }
        let digest = self
            .push_manifest(repo, tag, &image.media_type, &image.manifest)
            .await;
        assert_eq!(digest, image.digest);
    }
}
