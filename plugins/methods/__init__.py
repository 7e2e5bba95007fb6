"""Built-in methods: one module per method (client types, aggregators and the method that pairs them);
``partial`` (shared by FedRep and FedBN) and ``personal`` (by Ditto and pFedMe) are helpers."""
