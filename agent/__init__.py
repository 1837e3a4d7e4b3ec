"""qonto-agent: connects a company's file folders to Qonto supplier invoices."""

__version__ = "0.1.0"
