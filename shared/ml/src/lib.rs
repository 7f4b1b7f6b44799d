//! ML stack on candle.
