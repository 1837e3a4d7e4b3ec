"""The Qonto API client: knows HTTP and Qonto, nothing about folders. Importing the package loads nothing."""
