-- The W3C trace context of the inventory event that started a release, so the spans of its
-- send batches link back to the event's trace. NULL when tracing was off.
ALTER TABLE releases ADD COLUMN traceparent text;
