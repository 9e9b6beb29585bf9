"""Background field removal: PDF, V-SHARP, LBV, iSMV/RESHARP."""
