"""What a method is made of, with no I/O: :class:`~fedbench.fl.learner.Learner` and ``LearnersEnsemble``,
:class:`~fedbench.fl.client.Client` (a method's state and its pure functions), the
:class:`~fedbench.fl.aggregator.Aggregator` base, the messages both sides exchange
(:mod:`fedbench.fl.messages`), the one SGD step and batch loss (:mod:`fedbench.fl.learner`),
:class:`~fedbench.fl.data.FederatedData`, tasks, seeding, metrics, and the model transforms the engines
rely on (keyed dropout, batchable LSTMs)."""
