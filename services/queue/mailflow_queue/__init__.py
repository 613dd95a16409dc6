"""queue: records every accepted message and recipient, hands out delivery jobs, retries, bounces."""
