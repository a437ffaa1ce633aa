/* stub: replaced by its module's author */
