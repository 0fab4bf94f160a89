-- What a click led to: the variant's page, or the page marked sold out (the variant sold out
-- again between the text and the click). Counted apart in reports; a sold-out click may put
-- the shopper's subscription back to waiting (tenant option sold_out_click_rewaits).
ALTER TABLE clicks ADD COLUMN outcome text NOT NULL DEFAULT 'redirected'
    CHECK (outcome IN ('redirected', 'sold_out'));
