"""Domain logic, one module per concern; servlets call these, these call stores."""
