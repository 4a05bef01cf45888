//! The built-in table of HSS regions and the endpoints the official SDK resolves them to.
//!
//! The list is `huaweicloudsdkhss/v5/region/hss_region.py` (SDK 3.1.219). Every region lives under
//! `myhuaweicloud.com` except `eu-west-101`, which Huawei runs under `myhuaweicloud.eu`. Whether a region offers the
//! container/IaC task statistics is not recorded anywhere; a region missing the feature answers with an HSS error.

use url::Url;

/// Every region the HSS SDK knows, in the SDK's order.
pub const REGIONS: [&str; 32] = [
    "cn-north-9",
    "cn-north-1",
    "cn-north-4",
    "cn-southwest-2",
    "cn-east-2",
    "cn-east-3",
    "cn-east-4",
    "cn-south-1",
    "cn-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "na-mexico-1",
    "af-south-1",
    "sa-brazil-1",
    "la-south-2",
    "cn-south-4",
    "la-north-2",
    "tr-west-1",
    "cn-north-2",
    "ap-southeast-4",
    "ae-ad-1",
    "me-east-1",
    "cn-east-5",
    "my-kualalumpur-1",
    "eu-west-101",
    "ru-moscow-1",
    "cn-north-12",
    "cn-southwest-3",
    "cn-north-11",
    "af-north-1",
    "ap-southeast-5",
];

/// The one region whose endpoints are under `.eu` rather than `.com`.
const EU_REGION: &str = "eu-west-101";

/// The HSS endpoint of a known region (`https://hss.{region}.myhuaweicloud.com`), so configs can name a region
/// instead of spelling out a URL. `None` for a region the SDK does not list: such targets must give `endpoint`.
pub fn hss_endpoint(region: &str) -> Option<Url> {
    service_endpoint("hss", region)
}

/// The IAM endpoint of a known region, where password logins get their project-scoped tokens (a token is only
/// valid in the region that issued it).
pub fn iam_endpoint(region: &str) -> Option<Url> {
    service_endpoint("iam", region)
}

/// The known region whose HSS endpoint `url` points at, so error advice can say "in region cn-north-4".
pub fn region_of_hss_endpoint(url: &Url) -> Option<&'static str> {
    let host = url.host_str()?;
    REGIONS.into_iter().find(|r| hss_endpoint(r).is_some_and(|e| e.host_str() == Some(host)))
}

/// Whether `region` is in the built-in table.
pub fn is_known(region: &str) -> bool {
    REGIONS.contains(&region)
}

fn service_endpoint(service: &str, region: &str) -> Option<Url> {
    if !is_known(region) {
        return None;
    }
    let domain = if region == EU_REGION { "myhuaweicloud.eu" } else { "myhuaweicloud.com" };
    Url::parse(&format!("https://{service}.{region}.{domain}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hss_endpoint_names_its_region_and_other_hosts_none() {
        let region = |u: &str| Url::parse(u).ok().as_ref().and_then(region_of_hss_endpoint);
        assert_eq!(region("https://hss.cn-north-4.myhuaweicloud.com/prefix"), Some("cn-north-4"));
        assert_eq!(region("https://hss.eu-west-101.myhuaweicloud.eu"), Some("eu-west-101"));
        assert_eq!(region("https://hss.eu-west-101.myhuaweicloud.com"), None);
        assert_eq!(region("http://127.0.0.1:8080"), None);
    }

    #[test]
    fn every_region_resolves_to_an_https_endpoint_naming_it() {
        for region in REGIONS {
            let hss = hss_endpoint(region).unwrap_or_else(|| panic!("{region} has no HSS endpoint"));
            let iam = iam_endpoint(region).unwrap_or_else(|| panic!("{region} has no IAM endpoint"));
            assert_eq!(hss.scheme(), "https");
            assert_eq!(hss.host_str(), Some(format!("hss.{region}.{}", hss_domain(region)).as_str()));
            assert_eq!(iam.host_str(), Some(format!("iam.{region}.{}", hss_domain(region)).as_str()));
            assert_eq!(hss.port(), None);
            assert_eq!(hss.path(), "/");
        }
    }

    fn hss_domain(region: &str) -> &'static str {
        if region == "eu-west-101" { "myhuaweicloud.eu" } else { "myhuaweicloud.com" }
    }

    #[test]
    fn the_table_holds_32_distinct_regions() {
        let mut sorted = REGIONS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 32);
    }

    #[test]
    fn eu_west_101_is_served_from_the_eu_domain() {
        assert_eq!(
            hss_endpoint("eu-west-101").map(String::from).as_deref(),
            Some("https://hss.eu-west-101.myhuaweicloud.eu/")
        );
        assert_eq!(
            iam_endpoint("eu-west-101").map(String::from).as_deref(),
            Some("https://iam.eu-west-101.myhuaweicloud.eu/")
        );
        assert_eq!(
            hss_endpoint("cn-north-4").map(String::from).as_deref(),
            Some("https://hss.cn-north-4.myhuaweicloud.com/")
        );
    }

    #[test]
    fn an_unknown_region_has_no_endpoint() {
        assert_eq!(hss_endpoint("cn-north-99"), None);
        assert_eq!(iam_endpoint(""), None);
        assert_eq!(hss_endpoint("CN-NORTH-4"), None);
        assert_eq!(hss_endpoint("cn-north-4.evil.com/x"), None);
        assert!(!is_known("eu-west-1"));
    }
}
