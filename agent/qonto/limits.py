"""Qonto's documented limits, stated once: the client, the configuration, the inbox and the
sandbox (which plays Qonto) all read them here. Then our own bounds on what we accept back."""

MAX_ITEMS = 20  # invoices per bulk request
MAX_FILE_BYTES = 10 * 1024 * 1024  # per file
MAX_REQUEST_BYTES = 15 * 1024 * 1024  # per request (an older reference page); framing counts too
REQUEST_BUDGET_BYTES = 15_000_000  # what a batch plans for: under the cap, with room to spare
PART_OVERHEAD = 1024  # bytes of multipart headers per item, counted against the budget
KEY_WINDOW_SECONDS = 1800.0  # how long Qonto remembers an idempotency key
PER_PAGE = 100  # the largest page of a list
URL_TTL_SECONDS = 1800.0  # a pre-signed attachment link's life

# Our own bounds on what the other side sends (not Qonto's numbers: a guard against a proxy or a
# server gone wrong). A page of 100 invoices is well under 1 MB.
MAX_ANSWER_BYTES = 50 * 1024 * 1024  # the largest JSON answer read; a larger one is refused unread
MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024  # an attachment whose `file_size` is not given stops here
STORAGE_CONCURRENCY = 8  # pre-signed downloads at once: the storage host has its own limits, not Qonto's
