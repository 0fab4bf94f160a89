//! Deep links go only where the brand sends them: Subscribe refuses a link off the tenant's
//! allowed hosts, and never overwrites what the catalog (the inventory feed) says about a
//! variant.

use restock::proto::v1 as pb;

use crate::helpers::*;

/// The demo tenant's storefront host (config/default.toml), the only host allowed by default.
const SHOP: &str = "https://demo-outfitters.example";

fn with_link(variant: &str, phone: &str, deep_link: &str) -> pb::SubscribeRequest {
    let mut req = subscribe_request(variant, phone);
    req.variant = Some(pb::VariantDetails {
        title: "Trail Runner 2".into(),
        deep_link: deep_link.into(),
        ..Default::default()
    });
    req
}

/// (product_id, title, options, deep_link) of a stored variant.
async fn stored(
    app: &TestApp,
    variant: &str,
) -> (
    Option<String>,
    Option<String>,
    serde_json::Value,
    Option<String>,
) {
    let row = app
        .db()
        .await
        .query_one(
            "SELECT product_id, title, options, deep_link FROM variants \
             WHERE tenant_id = 'demo' AND variant_id = $1",
            &[&variant],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn a_deep_link_off_the_brands_hosts_is_refused() {
    let app = spawn_app().await;
    for bad in [
        "https://evil.example/p/trail",
        "https://demo-outfitters.example.evil.example/p",
        "https://demo-outfitters.example@evil.example/p",
        "https://user:secret@demo-outfitters.example/p",
        "ftp://demo-outfitters.example/p",
        "javascript://demo-outfitters.example/%0aalert(1)",
    ] {
        let err = app
            .waitlist()
            .subscribe(with_link("sku-1", "+14155550900", bad))
            .await
            .expect_err(bad);
        assert_eq!(violated_fields(&err), ["variant.deep_link"], "{bad}");
    }
    assert_eq!(app.count("variants").await, 0);
    assert_eq!(app.count("subscriptions").await, 0);
    for good in [
        format!("{SHOP}/p/trail?v=sku-1"),
        "https://Demo-Outfitters.Example:443/p/trail".to_string(),
    ] {
        app.waitlist()
            .subscribe(with_link("sku-1", "+14155550900", &good))
            .await
            .unwrap_or_else(|e| panic!("{good}: {e:?}"));
    }
}

#[tokio::test]
async fn subscribe_never_overwrites_what_the_catalog_says_about_a_variant() {
    let app = spawn_app().await;
    let mut ev = event("ev-1", "sku-1", "web", 0, 1);
    ev.product_id = "prod-1".into();
    ev.variant = Some(pb::VariantDetails {
        title: "Trail Runner 2".into(),
        options: [("size".to_string(), "M".to_string())].into(),
        deep_link: format!("{SHOP}/p/trail?v=sku-1"),
    });
    app.report_inventory(pb::ReportInventoryRequest {
        tenant_id: "demo".into(),
        events: vec![ev],
    })
    .await
    .unwrap();
    let catalog = stored(&app, "sku-1").await;
    assert_eq!(
        catalog.3.as_deref(),
        Some(&*format!("{SHOP}/p/trail?v=sku-1"))
    );

    // An allowed host, but not what the catalog says: the catalog wins.
    let mut req = subscribe_request("sku-1", "+14155550901");
    req.product_id = "prod-other".into();
    req.variant = Some(pb::VariantDetails {
        title: "FREE GIFT, click now".into(),
        options: [("size".to_string(), "XL".to_string())].into(),
        deep_link: format!("{SHOP}/sale/elsewhere"),
    });
    app.subscribe(req).await.unwrap();
    assert_eq!(stored(&app, "sku-1").await, catalog);

    // A variant the catalog never described is filled in by the first Subscribe, and a later
    // Subscribe does not rewrite it.
    app.subscribe(with_link("sku-2", "+14155550902", &format!("{SHOP}/p/two")))
        .await
        .unwrap();
    app.subscribe(with_link(
        "sku-2",
        "+14155550903",
        &format!("{SHOP}/p/other"),
    ))
    .await
    .unwrap();
    assert_eq!(
        stored(&app, "sku-2").await.3.as_deref(),
        Some(&*format!("{SHOP}/p/two"))
    );
}
