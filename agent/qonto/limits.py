"""Qonto's documented limits, stated once: the client, the configuration, the inbox and the
sandbox (which plays Qonto) all read them here."""

MAX_ITEMS = 20  # invoices per bulk request
MAX_FILE_BYTES = 10 * 1024 * 1024  # per file
MAX_REQUEST_BYTES = 15 * 1024 * 1024  # per request (an older reference page); framing counts too
REQUEST_BUDGET_BYTES = 15_000_000  # what a batch plans for: under the cap, with room to spare
PART_OVERHEAD = 1024  # bytes of multipart headers per item, counted against the budget
KEY_WINDOW_SECONDS = 1800.0  # how long Qonto remembers an idempotency key
PER_PAGE = 100  # the largest page of a list
URL_TTL_SECONDS = 1800.0  # a pre-signed attachment link's life
