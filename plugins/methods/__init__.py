"""Built-in methods: one module per method (client types, aggregators and the method that pairs them);
``partial`` is a helper shared by FedRep and FedBN."""
