//! Sans-IO state machines for the coordinator round and the participant session.
